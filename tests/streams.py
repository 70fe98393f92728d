"""A stream for the k6 runner's output that presses Ctrl-C once the run is under way."""

from __future__ import annotations

import io


class CtrlCOnProgress(io.StringIO):
    """Raises KeyboardInterrupt, as a Ctrl-C would, on k6's `nth` progress line (about
    one a second: "running (02.0s), ..."); keeps everything written, before and after."""

    def __init__(self, nth: int = 2) -> None:
        super().__init__()
        self.left = nth
        self.pressed = False

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.pressed and text.startswith("running ("):
            self.left -= 1
            if self.left == 0:
                self.pressed = True
                raise KeyboardInterrupt
        return written
