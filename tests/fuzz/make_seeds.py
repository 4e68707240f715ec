"""Writes the seed corpora `tests/fuzz/corpus/<harness>/`: `python tests/fuzz/make_seeds.py`.

Small real files (a few KB each) made with the libraries users' files come from (PIL, PyYAML,
torch, safetensors, pydicom, nibabel, zipfile), plus broken ones. Inputs that once crashed a
parser are saved beside them by hand (`crash-*`) and are never rewritten here.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CORPUS = Path(__file__).resolve().parent / "corpus"


def _png(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    png = _png(rgb)
    frames = [Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)) for _ in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: decode_image turns it upright
    grey16 = Image.fromarray(rng.integers(0, 65535, (6, 6), dtype=np.uint16))
    return {
        "rgb.png": png,
        "truncated.png": png[: len(png) // 2],
        "grey16.png": _encode(grey16, "PNG"),
        "rgba.png": _png(rng.integers(0, 255, (5, 5, 4), dtype=np.uint8)),
        "palette.png": _encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "photo.jpg": _encode(Image.fromarray(rgb), "JPEG", quality=80, exif=exif),
        "anim.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "image.bmp": _encode(Image.fromarray(rgb), "BMP"),
        "image.tiff": _encode(Image.fromarray(rgb), "TIFF"),
        "not-an-image.txt": b"hello, not an image\n",
    }


def csvs() -> dict[str, bytes]:
    return {
        "valid.csv": b"path,label\na.png,cat\nsub/b.png,dog\n",
        "extra-columns.csv": b"path,label,patient\na.png,cat,p1\nsub/b.png,dog,p2\n",
        "multilabel.csv": b"path,label\na.png,cat;dog\nsub/b.png,\n",
        "bom.csv": b"\xef\xbb\xbfpath,label\r\na.png,cat\r\n",
        "missing-file.csv": b"path,label\nnope.png,cat\n",
        "short-row.csv": b"path,label\na.png\n",
        "no-header.csv": b"a.png,cat\n",
        "empty-label.csv": b"path,label\na.png,\n",
        "quoted.csv": b'path,label\n"a.png","c,a""t"\n',
    }


def configs() -> dict[str, bytes]:
    return {
        "valid.yaml": (
            b"model:\n  name: resnet20\noptim:\n  lr: 1e-3\nrun:\n  epochs: 2\n  seed: 1\n"
        ),
        "unknown-key.yaml": b"model:\n  arch: resnet20\n  colour: blue\n",
        "unknown-section.yaml": b"trainer:\n  epochs: 3\n",
        "not-a-mapping.yaml": b"- a\n- b\n",
        "bad-number.yaml": b"optim:\n  lr: fast\n",
        "anchors.yaml": b"a: &x {lr: 0.1}\noptim: *x\n",
        "empty.yaml": b"",
        "broken.yaml": b"model: [\n",
    }


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"conv1.weight": torch.randn(2, 1, 3, 3), "fc.weight": torch.randn(3, 2)}


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def checkpoints() -> dict[str, bytes]:
    ckpt = {
        "format": "resnet-checkpoint",
        "version": 1,
        "arch": "custom",
        "model": _state(),
        "classes": ["a", "b", "c"],
        "preprocessing": {"in_chans": 1, "size": [8, 8], "mean": [0.5], "std": [0.5]},
        "epoch": 1,
    }
    data = _torch_bytes(ckpt)
    return {
        "checkpoint.pt": data,
        "state-dict.pt": _torch_bytes(_state()),
        "wrapped.pt": _torch_bytes({"state_dict": _state()}),
        "newer.pt": _torch_bytes(dict(ckpt, version=99)),
        "truncated.pt": data[: len(data) // 2],
        "plain-list.pt": _torch_bytes([1, 2, 3]),
    }


def safetensor_files() -> dict[str, bytes]:
    from safetensors.torch import save

    data = save(_state(), metadata={"classes": "a,b,c"})
    return {
        "weights.safetensors": data,
        "truncated.safetensors": data[: len(data) // 2],
        "header-only.safetensors": data[: 8 + int.from_bytes(data[:8], "little")],
    }


def coco_files() -> dict[str, bytes]:
    valid = {
        "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2], "iscrowd": 0},
            {
                "id": 2,
                "image_id": 1,
                "category_id": 7,
                "bbox": [1, 1, 2, 2],
                "iscrowd": 0,
                "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]],
            },
        ],
        "categories": [{"id": 7, "name": "thing"}],
    }
    return {
        "valid.json": json.dumps(valid).encode(),
        "no-images.json": json.dumps(dict(valid, images=[])).encode(),
        "no-categories.json": json.dumps(dict(valid, categories=[])).encode(),
        "missing-file.json": json.dumps(
            dict(valid, images=[{"id": 1, "file_name": "x.png", "height": 4, "width": 4}])
        ).encode(),
        "not-json.json": b"{images: oops",
        "list.json": b"[1, 2]",
    }


def dicoms() -> dict[str, bytes]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    def one(rows: int, cols: int, **extra) -> bytes:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["seed"])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.Modality = "CT"
        ds.PatientID = "anon"
        ds.SeriesInstanceUID = "1.2.3"
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 0]
        for k, v in extra.items():
            setattr(ds, k, v)
        ds.PixelData = np.arange(rows * cols, dtype=np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    ct = one(8, 8)
    return {
        "ct.dcm": ct,
        "mono1.dcm": one(
            4, 4, PhotometricInterpretation="MONOCHROME1", WindowWidth=400, WindowCenter=40
        ),
        "truncated.dcm": ct[: len(ct) - 40],
        "header-only.dcm": ct[:200],
        "not-dicom.dcm": b"\0" * 128 + b"NOPE",
    }


def niftis() -> dict[str, bytes]:
    import nibabel as nib

    def one(shape: tuple[int, ...], cls=nib.Nifti1Image, dtype=np.int16) -> bytes:
        data = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
        img = cls(data, np.diag([2.0, 1.0, 1.0, 1.0]))
        return img.to_bytes()

    three = one((4, 3, 2))
    return {
        "3d.nii": three,
        "2d.nii": one((4, 3)),
        "4d.nii": one((3, 3, 2, 2)),
        "float.nii": one((2, 2, 2), dtype=np.float32),
        "nifti2.nii": one((2, 3, 2), nib.Nifti2Image),
        "truncated.nii": three[: len(three) - 10],
        "header-only.nii": three[:348],
        "gzip-inside.nii": gzip.compress(three, mtime=0),
    }


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = method
            z.writestr(info, data)
    return buf.getvalue()


def zips() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    png = _png(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
    folders = _zip({"cats/a.png": png, "cats/b.png": png, "dogs/c.png": png})
    bomb = bytearray(_zip({"big/x.png": b"\0" * 4096}))
    # The central directory's uncompressed size claims 4 GiB: refused before extraction.
    cd = bomb.index(b"PK\x01\x02")
    bomb[cd + 24 : cd + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    return {
        "folders.zip": folders,
        "csv.zip": _zip(
            {"labels.csv": b"path,label\na.png,cat\nb.png,dog\n", "a.png": png, "b.png": png}
        ),
        "split.zip": _zip({"train/cats/a.png": png, "val/cats/b.png": png}, zipfile.ZIP_STORED),
        "zip-slip.zip": _zip({"../x.png": png}),
        "absolute.zip": _zip({"/etc/x.png": png}),
        "bomb-header.zip": bytes(bomb),
        "truncated.zip": folders[: len(folders) // 2],
        "empty.zip": _zip({}),
    }


SEEDS = {
    "image": images,
    "labels_csv": csvs,
    "config": configs,
    "checkpoint": checkpoints,
    "safetensors": safetensor_files,
    "coco": coco_files,
    "dicom": dicoms,
    "nifti": niftis,
    "zip_upload": zips,
}


def main() -> None:
    """Writes every harness's seeds (keeps files already there, such as saved crashes)."""
    for harness, make in SEEDS.items():
        folder = CORPUS / harness
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in make().items():
            (folder / name).write_bytes(data)
        total = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{harness:12s} {len(list(folder.iterdir())):3d} files {total / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
