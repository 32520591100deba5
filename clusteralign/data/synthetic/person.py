"""Drawing one person: a map of body-part labels, then coloured, patterned and shaded onto the scene.

Drawing labels first (not colours) lets the clothing pattern and the shading follow the body
parts, and lets a side view be drawn facing right and mirrored.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .appearance import Look

# Labels of the body-part map that each person is first drawn into.
_BG, _SKIN, _HAIR, _TOP, _BOTTOM, _SHOES, _HAT, _BAG, _BACKPACK, _LOGO = range(10)
_NUM_LABELS = 10


class _Figure:
    """One person's proportions in the frame, and the shapes every body part is drawn with."""

    def __init__(self, draw: ImageDraw.ImageDraw, look: Look, view: str, cx: float, top: float,
                 height: float, stride: float) -> None:
        self.draw, self.look, self.view = draw, look, view
        self.cx, self.top, self.height, self.stride = cx, top, height, stride
        self.u = 0.14 * height * look.build  # half shoulder width
        self.head_rx, self.head_ry, self.head_y = 0.052 * height, 0.066 * height, self.y(0.075)
        self.leg_w = 0.38 * self.u
        self.side = view == "side"
        self.tw = 0.62 * self.u if self.side else self.u  # torso half width at the shoulders
        self.head_x = cx + (0.12 * self.u if self.side else 0.0)

    def y(self, f: float) -> float:
        return self.top + f * self.height

    def ellipse(self, x: float, yc: float, rx: float, ry: float, label: int) -> None:
        self.draw.ellipse((x - rx, yc - ry, x + rx, yc + ry), fill=label)

    def limb(self, x0: float, y0: float, x1: float, y1: float, width: float, label: int) -> None:
        self.draw.line((x0, y0, x1, y1), fill=label, width=max(1, int(round(width))))
        self.ellipse(x1, y1, width / 2, width / 2, label)


def _draw_person(draw: ImageDraw.ImageDraw, look: Look, view: str, cx: float, top: float,
                 height: float, stride: float) -> float:
    """Draw `look` as body-part labels; returns the half shoulder width, for shading."""
    fig = _Figure(draw, look, view, cx, top, height, stride)
    # Long hair falls behind the shoulders in front view.
    if look.hair_long and view == "front":
        draw.rectangle((cx - 1.25 * fig.head_rx, fig.y(0.07), cx + 1.25 * fig.head_rx, fig.y(0.23)), fill=_HAIR)
    # Back to front: what is drawn later covers what was drawn before.
    _draw_legs(fig)
    _draw_torso_and_arms(fig)
    _draw_head(fig)
    _draw_details(fig)
    return fig.u


def _draw_legs(fig: _Figure) -> None:
    """Legs, shorts, shoes and a skirt."""
    draw, look, cx, u, tw, side, height, y = fig.draw, fig.look, fig.cx, fig.u, fig.tw, fig.side, fig.height, fig.y
    # Legs: a walking stride opens them in side view; front and back views barely show it.
    hip_y, foot_y = y(0.50), y(0.935)
    if side:
        swing = 0.17 * height * fig.stride
        feet = [(cx - swing, foot_y), (cx + swing, foot_y)]
        hips = [(cx, hip_y), (cx, hip_y)]
    else:
        lift = 0.015 * height * fig.stride
        feet = [(cx - 0.45 * u, foot_y - lift), (cx + 0.45 * u, foot_y + lift)]
        hips = [(cx - 0.45 * u, hip_y), (cx + 0.45 * u, hip_y)]
    leg_label = _BOTTOM if look.bottom_kind == "trousers" else _SKIN
    for (hx, hy), (fx, fy) in zip(hips, feet):
        fig.limb(hx, hy, fx, fy, fig.leg_w * 2, leg_label)
        if look.bottom_kind == "shorts":
            t = 0.4
            fig.limb(hx, hy, hx + t * (fx - hx), hy + t * (fy - hy), fig.leg_w * 2.1, _BOTTOM)
        shoe_dx = 0.12 * u if side else 0.0
        fig.ellipse(fx + shoe_dx, fy + 0.02 * height, 0.55 * fig.leg_w * (1.6 if side else 1.2),
                    0.03 * height, _SHOES)
    if look.bottom_kind == "skirt":
        w0, w1 = 0.82 * tw, 1.15 * tw + (0.1 * u if side else 0.0)
        draw.polygon([(cx - w0, y(0.47)), (cx + w0, y(0.47)), (cx + w1, y(0.72)),
                      (cx - w1, y(0.72))], fill=_BOTTOM)


def _draw_torso_and_arms(fig: _Figure) -> None:
    """The torso between the arms; in side view the back arm and a backpack go behind it."""
    draw, look, cx, u, tw, side, height, y = fig.draw, fig.look, fig.cx, fig.u, fig.tw, fig.side, fig.height, fig.y
    stride = fig.stride
    # Back arm (side view) goes behind the torso.
    shoulder_y, hand_y = y(0.20), y(0.50)
    arm_w = 0.36 * u
    arm_label = _TOP if look.long_sleeves else _SKIN

    def arm(x0: float, x1: float) -> None:
        fig.limb(x0, shoulder_y, x1, hand_y, arm_w, arm_label)
        if not look.long_sleeves:
            fig.limb(x0, shoulder_y, x0 + 0.3 * (x1 - x0), shoulder_y + 0.3 * (hand_y - shoulder_y),
                     arm_w * 1.15, _TOP)
        fig.ellipse(x1, hand_y + 0.01 * height, 0.55 * arm_w, 0.03 * height, _SKIN)

    if side:
        arm(cx, cx + 0.12 * height * stride)
    # Backpack seen from the side sits behind the back.
    if look.backpack is not None and side:
        draw.rounded_rectangle((cx - tw - 0.55 * u, y(0.19), cx - 0.6 * tw, y(0.46)),
                               radius=0.15 * u, fill=_BACKPACK)

    # Torso.
    draw.polygon([(cx - tw, y(0.17)), (cx + tw, y(0.17)), (cx + 0.85 * tw, y(0.53)),
                  (cx - 0.85 * tw, y(0.53))], fill=_TOP)
    fig.ellipse(cx - tw + 0.25 * u, y(0.19), 0.27 * u, 0.04 * height, _TOP)
    fig.ellipse(cx + tw - 0.25 * u, y(0.19), 0.27 * u, 0.04 * height, _TOP)

    if side:
        arm(cx, cx - 0.12 * height * stride)
    else:
        swing = 0.03 * height * stride
        arm(cx - tw - 0.1 * u, cx - tw - 0.22 * u + swing)
        arm(cx + tw + 0.1 * u, cx + tw + 0.22 * u - swing)


def _draw_head(fig: _Figure) -> None:
    """Neck, hair, face and hat."""
    draw, look, view, u, side, y = fig.draw, fig.look, fig.view, fig.u, fig.side, fig.y
    head_x, head_y, head_rx, head_ry = fig.head_x, fig.head_y, fig.head_rx, fig.head_ry
    # Neck and head: the head is first all hair, then the face covers what the view shows.
    draw.rectangle((head_x - 0.17 * u, y(0.11), head_x + 0.17 * u, y(0.18)), fill=_SKIN)
    if look.hair_long and side:  # behind the face, down the back
        draw.rectangle((head_x - 1.2 * head_rx, head_y, head_x + 0.1 * head_rx, y(0.25)),
                       fill=_HAIR)
    fig.ellipse(head_x, head_y, head_rx * 1.06, head_ry * 1.05, _HAIR)
    if view == "front":
        fig.ellipse(head_x, head_y + 0.22 * head_ry, head_rx * 0.92, head_ry * 0.84, _SKIN)
    elif side:
        fig.ellipse(head_x + 0.35 * head_rx, head_y + 0.22 * head_ry, head_rx * 0.72,
                    head_ry * 0.82, _SKIN)
    if look.hair_long and view == "back":
        draw.rectangle((head_x - 1.2 * head_rx, head_y, head_x + 1.2 * head_rx, y(0.25)),
                       fill=_HAIR)
    if look.hat is not None:
        draw.chord((head_x - 1.15 * head_rx, head_y - 1.15 * head_ry, head_x + 1.15 * head_rx,
                    head_y + 0.5 * head_ry), 180, 360, fill=_HAT)
        brim = 0.7 * head_rx if side else 0.25 * head_rx
        draw.rectangle((head_x - 1.1 * head_rx, head_y - 0.25 * head_ry,
                        head_x + 1.1 * head_rx + brim, head_y - 0.05 * head_ry), fill=_HAT)


def _draw_details(fig: _Figure) -> None:
    """Details that only some viewpoints show: a chest logo, a backpack, a bag's strap."""
    draw, look, view, cx, u, side, height, y = fig.draw, fig.look, fig.view, fig.cx, fig.u, fig.side, fig.height, fig.y
    head_x, head_y, head_rx = fig.head_x, fig.head_y, fig.head_rx
    if look.pattern == "logo" and view == "front":
        fig.ellipse(cx, y(0.3), 0.38 * u, 0.045 * height, _LOGO)
    if look.backpack is not None and view == "back":
        draw.rounded_rectangle((cx - 0.72 * u, y(0.19), cx + 0.72 * u, y(0.46)), radius=0.2 * u,
                               fill=_BACKPACK)
        if look.hair_long:
            draw.rectangle((head_x - 1.2 * head_rx, head_y, head_x + 1.2 * head_rx, y(0.25)),
                           fill=_HAIR)
    if look.backpack is not None and view == "front":
        for sx in (-1, 1):
            fig.limb(cx + sx * 0.55 * u, y(0.17), cx + sx * 0.6 * u, y(0.38), 0.2 * u, _BACKPACK)
    if look.bag is not None:
        if side:
            fig.limb(cx, y(0.18), cx - 0.1 * u, y(0.44), 0.12 * u, _BAG)
            draw.rectangle((cx - 0.55 * u, y(0.43), cx + 0.35 * u, y(0.57)), fill=_BAG)
        else:
            fig.limb(cx - 0.7 * u, y(0.17), cx + 0.85 * u, y(0.46), 0.14 * u, _BAG)
            draw.rectangle((cx + 0.8 * u, y(0.42), cx + 1.45 * u, y(0.58)), fill=_BAG)


def _colour_table(look: Look) -> np.ndarray:
    table = np.zeros((_NUM_LABELS, 3), dtype=np.float32)
    table[_SKIN] = look.skin
    table[_HAIR] = look.hair
    table[_TOP] = look.top
    table[_BOTTOM] = look.bottom
    table[_SHOES] = look.shoes
    table[_HAT] = look.hat if look.hat is not None else look.hair
    table[_BAG] = look.bag if look.bag is not None else look.top
    table[_BACKPACK] = look.backpack if look.backpack is not None else look.top
    table[_LOGO] = look.top_alt
    return table


def paint_person(img: np.ndarray, look: Look, view: str, cx: float, top: float,
                 height: float, stride: float, facing_left: bool, light: float) -> None:
    """Paint one person over the (H, W, 3) float image `img`, in place."""
    h, w = img.shape[:2]
    canvas = Image.new("L", (w, h), _BG)
    # Side views are drawn facing right; mirror the centre so the flip lands where asked.
    draw_cx = (w - 1 - cx) if facing_left else cx
    u = _draw_person(ImageDraw.Draw(canvas), look, view, draw_cx, top, height, stride)
    if facing_left:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    box = canvas.getbbox()
    if box is None:  # drawn entirely outside the frame
        return
    x0, y0, x1, y1 = box
    labels = np.asarray(canvas.crop(box))
    rgb = np.take(_colour_table(look), labels, axis=0)

    if look.pattern in ("hstripes", "vstripes", "checks"):
        period = max(2.0, look.pattern_period * height)
        yy = (np.arange(y0, y1, dtype=np.float32)[:, None] - top) / period
        xx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / period + 1000.0
        if look.pattern == "hstripes":
            on = np.broadcast_to(np.floor(yy) % 2 == 0, labels.shape)
        elif look.pattern == "vstripes":
            on = np.broadcast_to(np.floor(xx) % 2 == 0, labels.shape)
        else:
            on = (np.floor(yy) + np.floor(xx)) % 2 == 0
        rgb[(labels == _TOP) & on] = look.top_alt

    # Round bodies: darker towards the silhouette edges, brighter on the lit side.
    xs = (np.arange(x0, x1, dtype=np.float32) - cx) / (1.7 * u)
    shade = np.clip(1.0 - 0.35 * xs**2 + 0.12 * light * xs, 0.45, 1.15)
    rgb *= shade[None, :, None]
    body = labels != _BG
    img[y0:y1, x0:x1][body] = rgb[body]
