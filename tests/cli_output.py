"""What the tests read from the CLI's output."""


def one_line_error(capsys) -> str:
    """The CLI's stderr must be exactly one line, `error: ...`, and no traceback; returns that line."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]
