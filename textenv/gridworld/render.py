"""Drawing a grid: text for "ansi", a small numpy image for "rgb_array" (numpy only, no extra deps).

Each thing gets its own colour and shape so frames read at a glance (and in a GIF): the cat is an
orange disc with two ears, the broom a brown diagonal handle over a straw head, the bathtub a blue
tub with white rim, the meat a red oval with a bone, walls are dark grey blocks.
"""

from __future__ import annotations

import numpy as np

from textenv.gridworld.layout import BATHTUB, BROOM, MEAT, WALL, Layout

BACKGROUND = (245, 240, 225)
GRID_LINE = (190, 180, 160)
WALL_GREY = (70, 70, 80)
BROOM_HANDLE = (120, 72, 30)
BROOM_STRAW = (222, 184, 90)
TUB_BLUE = (60, 120, 220)
TUB_RIM = (235, 245, 255)
MEAT_RED = (200, 40, 50)
BONE_WHITE = (250, 250, 240)
CAT_ORANGE = (240, 140, 20)
CAT_EYE = (20, 20, 20)


RENDER_MODES = ("ansi", "rgb_array")


def check_render_mode(render_mode: str | None) -> str | None:
    """Return render_mode if it is None or a supported mode, else raise saying which are."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {list(RENDER_MODES)}, got {render_mode!r}.")
    return render_mode


def render_frame(layout: Layout, state: int, render_mode: str, cell_px: int = 32) -> str | np.ndarray:
    """One frame in the given mode: text for "ansi", an image for "rgb_array"."""
    if render_mode == "ansi":
        return render_ansi(layout, state)
    return render_rgb(layout, state, cell_px)


def render_ansi(layout: Layout, state: int) -> str:
    """The grid as text, one row per line, with ``C`` where the cat is (over whatever is there)."""
    lines = [list(line) for line in layout.to_ascii().splitlines()]
    start_row, start_col = layout.start
    lines[start_row][start_col] = "."
    row, col = layout.to_position(state)
    lines[row][col] = "C"
    return "\n".join("".join(line) for line in lines) + "\n"


def render_rgb(layout: Layout, state: int, cell_px: int = 32) -> np.ndarray:
    """The grid as an ``(rows * cell_px, cols * cell_px, 3)`` uint8 image with the cat drawn on top."""
    height, width = layout.rows * cell_px, layout.cols * cell_px
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    # Cell-local coordinates in [0, 1), the same for every cell: shapes are masks over them.
    v, u = np.meshgrid((np.arange(cell_px) + 0.5) / cell_px, (np.arange(cell_px) + 0.5) / cell_px, indexing="ij")
    draw = {WALL: _wall, BROOM: _broom, BATHTUB: _bathtub, MEAT: _meat}
    for r in range(layout.rows):
        for c in range(layout.cols):
            painter = draw.get(int(layout.cells[r, c]))
            if painter is not None:
                painter(image[r * cell_px : (r + 1) * cell_px, c * cell_px : (c + 1) * cell_px], u, v)
    row, col = layout.to_position(state)
    _cat(image[row * cell_px : (row + 1) * cell_px, col * cell_px : (col + 1) * cell_px], u, v)
    image[::cell_px, :] = GRID_LINE
    image[:, ::cell_px] = GRID_LINE
    image[-1, :] = GRID_LINE
    image[:, -1] = GRID_LINE
    return image


# Each painter colours one cell view in place; u is the horizontal, v the vertical coordinate (down).


def _wall(cell: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    cell[:] = WALL_GREY


def _broom(cell: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    handle = (np.abs((u - 0.25) - (v - 0.1) * 0.45) < 0.05) & (v > 0.1) & (v < 0.65)
    straw = (v >= 0.6) & (v < 0.9) & (np.abs(u - 0.5) < 0.08 + (v - 0.6) * 0.7)
    cell[straw] = BROOM_STRAW
    cell[handle] = BROOM_HANDLE


def _bathtub(cell: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    tub = ((u - 0.5) ** 2 / 0.42**2 + (v - 0.5) ** 2 / 0.35**2 < 1) & (v > 0.45)
    rim = (np.abs(v - 0.45) < 0.05) & (np.abs(u - 0.5) < 0.44)
    cell[tub] = TUB_BLUE
    cell[rim] = TUB_RIM


def _meat(cell: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    steak = (u - 0.45) ** 2 / 0.33**2 + (v - 0.55) ** 2 / 0.25**2 < 1
    bone = (np.abs(v - 0.55) < 0.05) & (u > 0.45) & (u < 0.92)
    knob = (u - 0.9) ** 2 + (v - 0.55) ** 2 < 0.07**2
    cell[steak] = MEAT_RED
    cell[bone | knob] = BONE_WHITE


def _cat(cell: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    head = (u - 0.5) ** 2 + (v - 0.58) ** 2 < 0.3**2
    # Two triangular ears above the head.
    ears = (v > 0.12) & (v < 0.42) & ((np.abs(u - 0.3) < (v - 0.12) * 0.5) | (np.abs(u - 0.7) < (v - 0.12) * 0.5))
    eyes = ((u - 0.39) ** 2 + (v - 0.55) ** 2 < 0.05**2) | ((u - 0.61) ** 2 + (v - 0.55) ** 2 < 0.05**2)
    cell[head | ears] = CAT_ORANGE
    cell[eyes] = CAT_EYE
