"""The project's own error types: every failure a user can cause is one of these, with a clear message."""


class SegmentsError(Exception):
    """Base class; the CLI prints these as one paragraph without a stack trace."""


class InputError(SegmentsError):
    """The input cannot be read or does not have the shape of an invoice-line export."""


class DataContractError(SegmentsError):
    """Data handed from one stage to the next breaks its Pandera contract."""

    def __init__(self, message: str, failure_cases=None):
        super().__init__(message)
        self.failure_cases = failure_cases


class ConfigurationError(SegmentsError):
    """A setting given through the environment has a value that cannot be used."""
