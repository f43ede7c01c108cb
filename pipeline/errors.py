"""The one error type stages raise for bad input: it names the stage and the path."""


class StageError(Exception):
    def __init__(self, stage: str, path: str, message: str):
        self.stage, self.path, self.message = stage, path, message
        super().__init__(f"[{stage}] {path}: {message}")


def require_input(stage: str, path: str, what: str = "input") -> str:
    """Fail with a StageError when an input path is missing."""
    from pipeline.atomic import exists

    if not exists(path):
        raise StageError(stage, path, f"missing {what} (did the previous stage run for this dump date?)")
    return path
