"""The ``rgb_array`` frame of a TextGen episode: the prompt (grey) and the completion so far (blue), word-wrapped
on white, as a ``(256, 640, 3)`` uint8 array; what Stable-Baselines3's ``make_vec_env`` and video recorders ask
for. Drawn with Pillow (installed with matplotlib) and its default font; text that does not fit shows its last
lines, where the newest tokens are."""

from __future__ import annotations

import re

import numpy as np

RGB_SIZE = (256, 640)
"""(height, width) of a frame."""
PROMPT_RGB, COMPLETION_RGB, MESSAGE_RGB, BACKGROUND_RGB = (90, 90, 90), (20, 60, 200), (0, 0, 0), (255, 255, 255)
MARGIN, LINE_PX, FONT_PX = 8, 20, 15


def _layout(text: str, width: int, measure) -> list[tuple[int, float, int, int]]:
    """``(line, x, start, end)`` of each word of ``text`` placed greedily in lines of ``width`` pixels; a word
    longer than a line is cut where it reaches the edge."""
    pieces, line, x, right = [], 0, float(MARGIN), width - MARGIN
    for m in re.finditer(r"\n|[^\S\n]+|\S+", text):
        if m.group() == "\n":
            line, x = line + 1, float(MARGIN)
            continue
        if m.group()[0].isspace():
            x += measure(m.group())  # a space past the edge is not drawn; the next word wraps
            continue
        start = m.start()
        while start < m.end():
            if x > MARGIN and x + measure(text[start:m.end()]) > right:  # the word goes to the next line
                line, x = line + 1, float(MARGIN)
            lo, hi = start + 1, m.end()  # the longest text[start:end] that fits (at least one character)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if x + measure(text[start:mid]) <= right else (lo, mid - 1)
            pieces.append((line, x, start, lo))
            x += measure(text[start:lo])
            start = lo
            if start < m.end():
                line, x = line + 1, float(MARGIN)
    return pieces


def text_image(prompt: str, completion: str | None, size: tuple[int, int] = RGB_SIZE) -> np.ndarray:
    """``prompt`` then ``completion`` drawn into a ``(height, width, 3)`` uint8 image (``completion=None``:
    ``prompt`` alone, in black: a message)."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = size
    try:
        font = ImageFont.load_default(size=FONT_PX)  # Pillow >= 10.1: a scalable font
    except TypeError:
        font = ImageFont.load_default()
    image = Image.new("RGB", (width, height), BACKGROUND_RGB)
    draw = ImageDraw.Draw(image)

    def measure(t: str) -> float:
        return draw.textlength(t, font=font)

    text, boundary = prompt + (completion or ""), len(prompt)
    pieces = _layout(text, width, measure)
    first = max(0, (pieces[-1][0] + 1 if pieces else 0) - (height - 2 * MARGIN) // LINE_PX)
    for line, x, start, end in pieces:
        if line < first:
            continue
        y = MARGIN + (line - first) * LINE_PX
        for a, b, color in ((start, min(end, boundary), PROMPT_RGB), (max(start, boundary), end, COMPLETION_RGB)):
            if a < b:
                draw.text((x + measure(text[start:a]), y), text[a:b], font=font,
                          fill=MESSAGE_RGB if completion is None else color)
    return np.asarray(image, dtype=np.uint8).copy()


def render_rgb(core, i: int) -> np.ndarray:
    """Row ``i`` of a ``TextGenCore``: its prompt and its completion so far."""
    if not core.prompt_ids[i]:
        return text_image("(no episode yet: call reset())", None)
    return text_image(core.prompt_text[i], core.completion_text(i))
