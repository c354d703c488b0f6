"""Image files: decoding bytes to (H, W, 3) uint8 RGB with a reason a user can act on when they are not an
image, and the reader of a folder of images."""

from __future__ import annotations

import io
import warnings

import numpy as np

from .base import Item, ItemError, Reader, _find_files, _read_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".tif", ".tiff")
# First bytes of each format: they turn PIL's "cannot identify image file" into a reason a user can act on
SIGNATURES = {"png": ("PNG", (b"\x89PNG\r\n\x1a\n",)), "jpg": ("JPEG", (b"\xff\xd8\xff",)),
              "jpeg": ("JPEG", (b"\xff\xd8\xff",)), "gif": ("GIF", (b"GIF87a", b"GIF89a")), "bmp": ("BMP", (b"BM",)),
              "webp": ("WebP", (b"RIFF",)), "tif": ("TIFF", (b"II*\x00", b"MM\x00*")),
              "tiff": ("TIFF", (b"II*\x00", b"MM\x00*"))}


def _gray_to_uint8(a: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit integer or float gray image -> uint8, scaled (never clipped): 16-bit data (and 32-bit
    integers within 0..65535, how PIL holds some 16-bit files) by 255/65535, floats within [0, 1] by 255,
    anything else stretched from its minimum to its maximum."""
    kind, itemsize = a.dtype.kind, a.dtype.itemsize
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = float(a.min()), float(a.max())
    if itemsize == 2 or (kind in "iu" and lo >= 0 and hi <= 65535):
        lo, hi = 0.0, 65535.0
    elif kind == "f" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    return np.round((a - lo) * (255.0 / max(hi - lo, 1e-12))).clip(0, 255).astype(np.uint8)


def _to_rgb(img) -> np.ndarray:
    """A decoded PIL image -> (H, W, 3) uint8 RGB: EXIF orientation applied, high bit depths scaled, alpha
    (and palette or gray transparency) composited on white."""
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) != 1:  # orientation tag; only then is a transposed copy worth making
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        gray = _gray_to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.has_transparency_data:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:]
        return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _not_an_image(data: bytes, ext: str) -> str:
    """Why PIL could not identify ``data``: another kind of file, or an image whose header is damaged."""
    head = data[:16]
    fmt, signatures = SIGNATURES.get(ext, (None, ()))
    if fmt and not head.startswith(signatures):
        return f"not an image ({fmt} signature missing; file starts with {head!r})"
    found = next((f for f, sigs in SIGNATURES.values() if head.startswith(sigs)), None)
    if found:
        return f"corrupt image ({found} signature, but PIL cannot read its header)"
    return f"not an image PIL can identify (file starts with {head!r})"


def decode_image(data: bytes, ext: str = "") -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB (see :func:`_to_rgb`). ``ext`` (``png``, ``jpg`` ...) only
    words the reason when the bytes are not an image. Raises :class:`ItemError` for an empty, damaged or
    unidentifiable file and for one beyond PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ItemError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit PIL only warns; a pool is untrusted input, so that is an error too.
            # (catch_warnings is process-wide state: fine in DataLoader worker processes, not in threads.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return _to_rgb(img)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ItemError(f"image too large ({err})") from None
    except UnidentifiedImageError:
        raise ItemError(_not_an_image(data, ext.lower())) from None
    except Exception as err:  # noqa: BLE001  PIL raises OSError, SyntaxError, ValueError, struct.error ...
        raise ItemError(f"corrupt image ({type(err).__name__}: {err})") from None


class ImageFolderReader(Reader):
    """Image files under a folder, any nesting; extensions in any case; hidden files and folders ignored.
    Label: the first-level sub-folder (None for images directly under the folder)."""

    kind = "image_folder"
    what = "a folder of images (sub-folders as optional labels)"

    def _list(self):
        self.root, self.files = _find_files(self.path, IMAGE_SUFFIXES, self.what)
        rel = [f.relative_to(self.root).parts for f in self.files]
        return [Item("/".join(parts), parts[0] if len(parts) > 1 else None) for parts in rel]

    def _load(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        f = self.files[i]
        return decode_image(_read_bytes(f), f.suffix[1:])
