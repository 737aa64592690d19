"""The one error type of checkpoint conversion: the CLIs print its message on one line and exit 2."""


class ConversionError(ValueError):
    pass
