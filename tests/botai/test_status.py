"""`manage.py botai_status` against the real services."""

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.e2e
def test_status_reports_a_missing_worker_and_exits_non_zero(start_worker, capsys):
    start_worker("gpu")
    with pytest.raises(CommandError) as error:
        call_command("botai_status")
    out = capsys.readouterr().out
    assert "[ok  ] database" in out
    assert "[ok  ] broker" in out
    assert "[ok  ] queue gpu" in out
    assert "[DOWN] queue trading            no worker consumes it" in out
    assert "queue trading" in str(error.value)
    assert "queue default" in str(error.value)
