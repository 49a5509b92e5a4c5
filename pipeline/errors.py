"""User-facing errors: one sentence naming the file or option; the CLI turns them into exit code 2."""


class PhfaError(Exception):
    """A mistake in the user's input (data, option, file). Printed as one sentence, exit 2."""
