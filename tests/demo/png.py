# SPDX-License-Identifier: GPL-2.0
"""PNG reading and writing for `make demo`, Python standard library only (zlib).

Reads what QEMU's `screendump ... format=png` writes (8-bit RGB or RGBA, not interlaced, any
filter), writes 8-bit RGB, and composes pictures side by side with captions in a built-in 5x7
font. An image is (width, height, pixels): pixels is a bytearray of RGB triples, row by row.
"""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != SIGNATURE:
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError(f"{path}: no IHDR")
    width, height, depth, colour, _, _, interlace = ihdr
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{path}: only 8-bit RGB/RGBA, not interlaced (depth {depth}, "
                         f"colour type {colour}, interlace {interlace})")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = bytearray(width * height * 3)
    prev = bytearray(stride)
    for y in range(height):
        base = y * (stride + 1)
        ftype = raw[base]
        line = bytearray(raw[base + 1:base + 1 + stride])
        if ftype == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif ftype == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        elif ftype != 0:
            raise ValueError(f"{path}: row {y}: filter type {ftype}")
        if bpp == 3:
            out[y * width * 3:(y + 1) * width * 3] = line
        else:
            row = bytearray(width * 3)
            row[0::3], row[1::3], row[2::3] = line[0::4], line[1::4], line[2::4]
            out[y * width * 3:(y + 1) * width * 3] = row
        prev = line
    return width, height, out


def write(path, image):
    width, height, pixels = image

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    stride = width * 3
    raw = b"".join(b"\0" + bytes(pixels[y * stride:(y + 1) * stride]) for y in range(height))
    with open(path, "wb") as f:
        f.write(SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def blank(width, height, rgb):
    return width, height, bytearray(bytes(rgb) * (width * height))


def paste(dst, src, x0, y0):
    dw, _, dp = dst
    sw, sh, sp = src
    for y in range(sh):
        dp[((y0 + y) * dw + x0) * 3:((y0 + y) * dw + x0 + sw) * 3] = sp[y * sw * 3:(y + 1) * sw * 3]


def crop(image, x0, y0, w, h):
    width, _, pixels = image
    out = bytearray()
    for y in range(y0, y0 + h):
        out += pixels[(y * width + x0) * 3:(y * width + x0 + w) * 3]
    return w, h, out


# 5x7 glyphs, one value a row, bit 4 leftmost.
FONT = {
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    " ": (0,) * 7, "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08), ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00),
    ",": (0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08), ".": (0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C),
    "-": (0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00), "_": (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F),
    "/": (0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10), ">": (0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08),
    "=": (0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00), "+": (0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00),
}


def text(image, x0, y0, s, rgb=(255, 255, 255), scale=2):
    """Draws s (upper-cased; unknown characters as blanks) with its top left corner at (x0, y0)."""
    width, height, pixels = image
    px = bytes(rgb)
    for n, ch in enumerate(s.upper()):
        rows = FONT.get(ch, FONT[" "])
        for r, bits in enumerate(rows):
            for c in range(5):
                if bits & (0x10 >> c):
                    for dy in range(scale):
                        y = y0 + r * scale + dy
                        x = x0 + (n * 6 + c) * scale
                        if 0 <= y < height and 0 <= x and x + scale <= width:
                            pixels[(y * width + x) * 3:(y * width + x + scale) * 3] = px * scale


def grid(rows, title=None, gap=16, margin=16, scale=2):
    """rows: [[(image, [caption lines]), ...], ...]; returns one image with the panels in rows,
    each with its caption above it, and the title above all."""
    line_h = 10 * scale
    title_h = (line_h + 8) if title else 0
    caption_h = max(len(lines) for row in rows for _, lines in row) * line_h + 4
    cell_w = max(img[0] for row in rows for img, _ in row)
    cell_h = caption_h + max(img[1] for row in rows for img, _ in row)
    cols = max(len(row) for row in rows)
    width = 2 * margin + cols * cell_w + (cols - 1) * gap
    height = 2 * margin + title_h + len(rows) * cell_h + (len(rows) - 1) * gap
    out = blank(width, height, (48, 48, 48))
    if title:
        text(out, margin, margin, title, scale=scale)
    for r, row in enumerate(rows):
        y = margin + title_h + r * (cell_h + gap)
        for c, (img, lines) in enumerate(row):
            x = margin + c * (cell_w + gap)
            for i, line in enumerate(lines):
                text(out, x, y + i * line_h, line,
                     rgb=(255, 255, 255) if i == 0 else (200, 200, 200), scale=scale)
            paste(out, img, x, y + caption_h)
    return out


def side_by_side(panels, title=None, **kw):
    """panels: [(image, [caption lines])] in one row."""
    return grid([panels], title, **kw)
