"""/recognize decodes an upload once: the single-digit check and the model take the same
decoded array, and what they compute from it is bit for bit what they computed from the
bytes (serving.recognize_options.decode)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pyfunc import preprocess, segment
from pyfunc.errors import ImageError, MultipleDigits
from pyfunc.preprocess import Limits
from serving import create_app, recognize_options
from tests.support import PROJECT_ROOT
from training import nondigits, numbers, variants

LIMITS = Limits()


def _png(img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **params)
    return buf.getvalue()


@pytest.fixture(scope="module")
def uploads(mnist) -> list[tuple[str, bytes]]:
    """Every kind of upload the decoder treats differently: clean 28×28 PNGs (the fast MNIST
    path), photos on paper (JPEG, reduced at decoding), alpha canvases, 16-bit, palette with
    transparency, big images, numbers of several digits, things that are not digits."""
    x = mnist.x_test
    out = [
        (f.name, f.read_bytes())
        for f in sorted((PROJECT_ROOT / "examples").iterdir())
        if f.suffix in (".png", ".jpg")
    ]
    for name, build in variants.VARIANTS.items():
        out += [(f"{name}-{i}", build(x[i], i)) for i in range(2)]
    digit = Image.fromarray(x[7])
    out += [
        ("la", _png(Image.merge("LA", (digit, digit)))),
        ("palette-transparency", _png(digit.convert("P"), transparency=0)),
        ("16-bit", _png(Image.fromarray(x[7].astype(np.uint16) * 257))),
        ("rgba-1300x900", _png(Image.merge("RGBA", (digit,) * 4).resize((1300, 900)))),
    ]
    strip = numbers.compose([x[0], x[1], x[2]], "wide", np.random.default_rng(0))
    out += [
        ("number-plain", numbers.plain(strip)),
        ("number-photo", numbers.photo(strip, np.random.default_rng(1))),
    ]
    out += [(s.label, s.data) for s in nondigits.build("measure", per_category=1)]
    return out


def _outcome(fn) -> tuple:
    try:
        result = fn()
    except MultipleDigits as exc:
        return ("multiple_digits", str(exc))
    except ImageError as exc:
        return (type(exc).__name__, str(exc))
    if result is None:
        return ("passed",)
    return ("array", result.dtype, result.shape, result.tobytes())


def test_the_decoded_array_gives_what_the_bytes_gave(uploads) -> None:
    """The model's input, the ink map and the single-digit verdict, from the bytes and from
    the request's one decoded array: equal bit for bit (and the same error, for a picture
    without a digit), on every kind of upload."""
    kinds = set()
    for name, data in uploads:
        decoded = recognize_options.decode(data, LIMITS)
        checks = {
            "model input": (
                lambda: preprocess.pre_process([data], limits=LIMITS),  # noqa: B023
                lambda: preprocess.pre_process([decoded], limits=LIMITS),  # noqa: B023
            ),
            "ink map": (
                lambda: preprocess.decode_image(data, LIMITS),  # noqa: B023
                lambda: preprocess.to_ink(decoded),  # noqa: B023
            ),
            "single digit": (
                lambda: segment.require_single(data, LIMITS),  # noqa: B023
                lambda: segment.require_single(decoded, LIMITS),  # noqa: B023
            ),
        }
        for what, (from_bytes, from_array) in checks.items():
            before = _outcome(from_bytes)
            assert _outcome(from_array) == before, (name, what)
            kinds.add((what, before[0]))
    # The set covers answers, refusals and pictures without a digit.
    assert {("model input", "array"), ("model input", "NoDigit")} <= kinds
    assert {("single digit", "passed"), ("single digit", "multiple_digits")} <= kinds


def test_the_handed_on_decoding_gives_what_the_bytes_gave(uploads) -> None:
    """What /recognize hands on (a DecodedImage carrying its decoding, and the single-digit
    check's ink map once made) gives the model bit for bit the input the bytes gave, and the
    carried ink map is the one the bytes give, on every kind of upload."""
    for name, data in uploads:
        carried = preprocess.decoded_image(preprocess.decode_images([data], LIMITS)[0])
        assert _outcome(lambda: segment.require_single(carried, LIMITS)) == _outcome(  # noqa: B023
            lambda: segment.require_single(data, LIMITS)  # noqa: B023
        ), name
        if carried.ink is not None:  # the check made it (it raises NoDigit on a blank)
            assert _outcome(lambda: carried.ink) == _outcome(  # noqa: B023
                lambda: preprocess.decode_image(data, LIMITS)  # noqa: B023
            ), name
        for model_input in (carried, np.asarray(carried)):  # a plain array carries nothing
            assert _outcome(
                lambda: preprocess.pre_process([model_input], limits=LIMITS)  # noqa: B023
            ) == _outcome(lambda: preprocess.pre_process([data], limits=LIMITS)), name  # noqa: B023


def test_bad_uploads_fail_decoding_as_the_model_would(mnist) -> None:
    too_big = _png(Image.new("L", (12_000, 1)))
    for data in (b"", b"not an image", too_big, _png(Image.fromarray(mnist.x_test[0]))[:60]):
        with pytest.raises(ImageError) as once:
            recognize_options.decode(data, LIMITS)
        with pytest.raises(ImageError) as model:
            preprocess.pre_process([data], limits=LIMITS)
        assert (type(once.value), str(once.value)) == (type(model.value), str(model.value))


@pytest.mark.parametrize("batching", [True, False])
def test_recognize_decodes_an_upload_once(registry, seed_png, monkeypatch, batching) -> None:
    """One pass of the decoder per request (it was three: the single-digit check, the
    model, and ``return_input``'s picture), and the same answer."""
    app = create_app(
        {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, "batching": batching}
    )
    app.config.update(TESTING=True)
    client = app.test_client()
    calls = []
    real = preprocess._decode

    def counted(data, limits):
        calls.append(len(data))
        return real(data, limits)

    monkeypatch.setattr(preprocess, "_decode", counted)
    answer = client.post(
        "/recognize?return_input=true", data=seed_png, content_type="image/png"
    ).get_json()
    assert calls == [len(seed_png)]
    assert answer["digit"] == 9
    expected = recognize_options.model_input_png(
        recognize_options.pre_process_of(object()), seed_png, LIMITS
    )
    assert answer["model_input"] == expected


@pytest.mark.parametrize("batching", [True, False])
def test_recognize_makes_a_photos_ink_map_once(registry, monkeypatch, batching) -> None:
    """The single-digit check's ink map is the one the model normalises (it made it twice:
    for a photo, the sheet, shadow and ruling steps each time), and the answer is the same."""
    app = create_app(
        {"mlflow_tracking_uri": registry.tracking_uri, "workers": 1, "batching": batching}
    )
    app.config.update(TESTING=True)
    client = app.test_client()
    photo = (PROJECT_ROOT / "examples" / "photo-two.jpg").read_bytes()
    expected = client.post("/recognize", data=photo, content_type="image/jpeg").get_json()
    calls = []
    real = preprocess._ink_from

    def counted(grey, alpha):
        calls.append(grey.shape)
        return real(grey, alpha)

    monkeypatch.setattr(preprocess, "_ink_from", counted)
    answer = client.post("/recognize", data=photo, content_type="image/jpeg").get_json()
    assert len(calls) == 1
    assert (answer["digit"], answer["probabilities"]) == (
        expected["digit"],
        expected["probabilities"],
    )


def test_a_big_numbers_boxes_are_in_the_pixels_as_sent(client, mnist) -> None:
    """Decoding reduces a picture wider than 512 pixels; the 422's boxes are still those
    of the image as sent, the same /read gives."""
    strip = numbers.compose([mnist.x_test[i] for i in (3, 4, 5)], "wide", np.random.default_rng(2))
    small = Image.open(io.BytesIO(numbers.plain(strip)))
    big = _png(small.resize((small.width * 4, small.height * 4)))
    assert max(recognize_options.decode(big, LIMITS).shape) < small.width * 4  # reduced
    refused = client.post("/recognize", data=big, content_type="image/png")
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "multiple_digits" and error["count"] == 3
    read = client.post("/read", data=big, content_type="image/png").get_json()
    assert error["boxes"] == [d["box"] for d in read["digits"]]
    assert max(x + w for x, _, w, _ in error["boxes"]) > small.width * 2


def test_only_a_model_that_decodes_as_pyfunc_does_takes_the_array(app) -> None:
    from serving.model_store import model_store

    with app.app_context():
        served = model_store().require().model
    assert recognize_options.shares_decoding(served)
    assert recognize_options.shares_decoding(object())  # pre-processed here, with pyfunc's

    class OwnDecoding:
        def pre_process(self, model_input, limits=None):
            raise AssertionError("not called")

    assert not recognize_options.shares_decoding(OwnDecoding())
