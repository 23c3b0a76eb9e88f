from pxefilterd import backoff


def test_delay_doubles_from_first_up_to_the_cap():
    assert backoff.delay(0, 16.0) == 0.0
    assert [backoff.delay(n, 16.0) for n in range(1, 8)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    assert backoff.delay(3, 100.0, first=0.5) == 2.0


def test_delay_of_a_very_long_outage_is_the_cap():
    assert backoff.delay(10 ** 6, 30.0) == 30.0


def test_backoff_counts_failures_and_resets_on_success():
    b = backoff.Backoff(cap=60.0)
    assert b.wait == 0.0
    assert [b.failed() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    b.succeeded()
    assert b.failures == 0 and b.wait == 0.0
    assert b.failed() == 1.0
