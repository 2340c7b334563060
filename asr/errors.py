"""User-facing error types.

Every error a user can cause (bad audio, manifest, config or checkpoint) is raised as one of
these; the CLI prints them as a single line and exits non-zero, without a traceback.
"""


class AsrError(Exception):
    """Base class for errors caused by user input; printed as one line by the CLI."""


class AudioError(AsrError):
    """An audio file is missing, unreadable, empty or otherwise unusable."""


class ManifestError(AsrError):
    """A manifest file or one of its lines is malformed."""


class ConfigError(AsrError):
    """A configuration field has an unknown name, a wrong type or an impossible value."""


class CheckpointError(AsrError):
    """A checkpoint is missing, corrupt, unsafe or incompatible."""


class TokenizerError(AsrError):
    """A tokenizer cannot be trained or does not fit the text."""


class DecodingError(AsrError):
    """Decoding options, a language model or a lexicon are unusable."""


class TrainingError(AsrError):
    """Training cannot go on (e.g. too many non-finite steps in a row); a checkpoint was saved."""
