"""The one exception type for mistakes a user can make and fix.

Command-line entry points and the GUI show its message as it is; anything
else that escapes is a bug in the program, not in the user's input.
"""


class PixelCNNError(Exception):
    """A bad file, option or request, with a sentence saying what to do."""
