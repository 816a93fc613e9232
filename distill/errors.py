"""The one exception type for mistakes a user of `distill` can make."""


class DistillInputError(ValueError):
    """Bad user input: a missing file, a tampered checkpoint, an out-of-range option.

    The message names the input and, where there is one, the fix. The CLI prints it on
    one line and exits with code 2.
    """
