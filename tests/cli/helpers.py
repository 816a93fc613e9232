"""Assertions the command-line tests share."""


def assert_one_line_error(result, needle):
    """Exit code 2 and exactly one ``error:`` line on stderr, containing ``needle``."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0], lines[0]
