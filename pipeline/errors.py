"""The one error type stages raise for bad input: it names the stage and the path."""


class StageError(Exception):
    def __init__(self, stage: str, path: str, message: str):
        self.stage, self.path, self.message = stage, path, message
        super().__init__(f"[{stage}] {path}: {message}")

