"""The one exception type for mistakes a user of `landscape` can make."""


class LandscapeInputError(ValueError):
    """Bad user input: a nonsense grid range, a foreign HDF5 file, k above the dimension.

    The message names the input and, where there is one, the fix. The CLI prints it on
    one line and exits with code 2.
    """


class NonFiniteLossError(LandscapeInputError):
    """The loss at some weights is NaN or inf; ``loss`` holds it.

    A caller that maps many weights (an eigenvalue map) records such a point as a gap.
    """

    def __init__(self, message: str, loss: float) -> None:
        super().__init__(message)
        self.loss = loss
