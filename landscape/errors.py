"""The one exception type for mistakes a user of `landscape` can make."""


class LandscapeInputError(ValueError):
    """Bad user input: a nonsense grid range, a foreign HDF5 file, k above the dimension.

    The message names the input and, where there is one, the fix. The CLI prints it on
    one line and exits with code 2.
    """
