"""Text from files and folders, made safe to print on a terminal."""

from __future__ import annotations


def safe_text(text: object, keep: str = "") -> str:
    """``str(text)`` with every unprintable character escaped as Python does (``\\x1b``, ``\\u202e``).

    Class names come from folder names, a ``--classes`` file or a checkpoint, and image paths
    from the file system: printed raw, an escape sequence in one could set the terminal's title,
    clear the screen or recolour what follows, and a bidirectional override could make it read
    as another name. ``keep`` lists characters left as they are (``"\\n"`` for multi-line text).
    """
    text = str(text)
    if text.isprintable():  # the common case, without building a new string
        return text
    return "".join(
        ch if ch.isprintable() or ch in keep else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
