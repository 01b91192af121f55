"""Errors raised while turning client bytes into model input.

Each carries a stable machine-readable ``code`` and the HTTP status the web layer
should answer with, so the service maps them without knowing image details.
"""


class ImageError(ValueError):
    """The input cannot be turned into a digit image."""

    code = "invalid_image"
    status = 400


class UnsupportedFormat(ImageError):
    """Decodable maybe, but not a format on the allow-list (SVG, PDF, TIFF, text …)."""

    code = "unsupported_format"
    status = 415


class ImageTooLarge(ImageError):
    """Dimensions or decoded pixel count over the configured limits."""

    code = "image_too_large"
    status = 413


class NoDigit(ImageError):
    """A decodable image without any ink: blank, uniform or pure noise."""

    code = "no_digit"
    status = 422


class MultipleDigits(ImageError):
    """Several digits side by side where one was expected: ``boxes`` says where, (x, y, w, h)
    each, left to right."""

    code = "multiple_digits"
    status = 422

    def __init__(self, message: str, boxes: list[tuple[int, int, int, int]]) -> None:
        super().__init__(message)
        self.boxes = boxes


class TooManyDigits(ImageError):
    """More digits in one image than a reader takes."""

    code = "too_many_digits"
    status = 422
