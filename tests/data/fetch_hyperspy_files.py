"""Fetch the small real-format test files of HyperSpy 1.7.6 from its PyPI wheel.

HyperSpy (GPL-3.0-or-later, like this project; © the HyperSpy developers, see
https://hyperspy.org and AUTHORS.txt copied beside the files) shipped real DM3/DM4, SER/EMI,
EMD (Velox and Berkeley), TIFF and HSPY files in its 1.7.6 wheel. Rather than committing them,
``make test`` runs this script once: it downloads that wheel from the package registry with
pip, extracts the files listed below into ``tests/data/hyperspy/`` and checks each SHA-256.

Usage: ``python tests/data/fetch_hyperspy_files.py`` (does nothing when all files are there).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "hyperspy==1.7.6"
PREFIX = "hyperspy/tests/io/"
DESTINATION = Path(__file__).parent / "hyperspy"

#: File (relative to hyperspy/tests/io) -> SHA-256.
FILES = {
    "dm3_2D_data/test_STEM_image.dm3": "fcba806af75bc3c2e50e7d7b0626cba545c1464f39e99c8922b225b0b0b0224c",
    "dm3_2D_data/multi_signal.dm3": "cd025111a163cad9ef6fb0331b740ddefa2f7024c3f691723bd5235a313aa12e",
    "dm3_2D_data/test_diffraction_pattern.dm3": "ebd6c192ce39e6bd5e67e2c6d53a36809307723023b16c9e149c7afbc3ef601a",
    "dm4_2D_data/test-MonarcCL_mono-image.dm4": "4ea04a10ad46595de79a20c283555f299dd07b4667f6112b44db1699f28993b6",
    "dm4_3D_data/test-1.dm4": "9bf4ac7d415700fea0d70f2113703a98da33ce7f05e1f2cd998047298f2f85b4",
    "dm4_3D_data/EELS_SI.dm4": "f9b8203f384cc355437594b649d4ea3a12cddeb231ebb65508a841a379fa171a",
    "FEI_new/128x128-TEM_search.emi": "0b0a18b5b6eeb166e0b363f5f7737003b6308f5c523b2d063c3f38bd66235f89",
    "FEI_new/128x128-TEM_search_1.ser": "8b79f81363d41f759ecda84fb91d50463e2a828f532d5b8f9378960e57fc3ae7",
    "FEI_old/64x64x5_TEM_preview.emi": "d2096088cda3a47abe6d18404aabdc0a2ae896b3940991aa6cf31c98959a4d49",
    "FEI_old/64x64x5_TEM_preview_1.ser": "08f1dc9d52bfb6da3d7d9ae4db16dbd5783332186bacbd4769e9f97a14f31d70",
    "FEI_old/64x64_diffraction_acquire_1.ser": "d5b0b0b0a5800706494e2edd7a4f2e151b2d0383df31f882a5220243c65a22af",
    "emd_files/fei_example_tem_stack.emd": "397d5076b0133db608abd985985fad275bf6594823393f72a069020e47c21a1e",
    "emd_files/example_image.emd": "ab32bb274c4e159dbf2e39bf18119b1476e1eec04349ab5fcc77e9701773f9cb",
    "emd_files/fei_example_complex_fft.emd": "eec20bd422428dc498334143e2a721aa793e79f399bfe16c21cb8b0313ff0c07",
    "tiff_files/test_loading_image_saved_with_imageJ.tif": "303dcaf1c33ec4112033fce92069ff7a7a93010f21414ea0620240f6266eeb9d",
    "tiff_files/test_loading_image_saved_with_imageJ_stack.tif": "d5412e74874c2ea82c0e5521862205e03b67ee4ee5f05f31be17a5022840fb02",
    "tiff_files/test_loading_image_saved_with_DM.tif": "e8d966494793142176f39e0c66fd4911d33d083136178458e08212bae5f029d4",
    "tiff_files/optical_Zeiss_AxioVision_RGB.tif": "9c30ec580beb314a1905993c0fe83bf52f5c5d447ef665ef427a2fcb6a0c985c",
    "hdf5_files/example2_v3.1.hspy": "7e598f0ba4af5c5ce40d1511c650ddcf3ff387f9d0ddd9bf2baf7c3f60597b60",
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def complete() -> bool:
    """True when every file is present with the right hash."""
    return all(
        (DESTINATION / name).is_file() and _sha256((DESTINATION / name).read_bytes()) == digest
        for name, digest in FILES.items()
    )


def main() -> int:
    if complete():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--dest", tmp, WHEEL_REQUIREMENT],
            check=True,
        )
        wheel = next(Path(tmp).glob("hyperspy-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name, digest in FILES.items():
                data = archive.read(PREFIX + name)
                if _sha256(data) != digest:
                    print(f"error: {name} in {wheel.name} has an unexpected SHA-256", file=sys.stderr)
                    return 1
                target = DESTINATION / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            info = next(n for n in archive.namelist() if n.endswith(".dist-info/AUTHORS.txt"))
            (DESTINATION / "AUTHORS.txt").write_bytes(archive.read(info))
    print(f"fetched {len(FILES)} HyperSpy 1.7.6 test files into {DESTINATION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
