"""``prnet-prepare-bfm`` (issue #22): face3d's generate.m in Python.

Stand-in inputs carry the real variable names, shapes (vertex counts, 68 keypoints, 114 mouth
triangles, 29 expression PCs, column/row orientation), dtypes and 1-based index conventions, with
few PCs and made-up values; each output field is compared with an expectation computed here
independently (plain loops over vertices and the script's literal numbers). With ``../shared``, the
real 3DMMasSTN UV file run through the UV fix must give the real 53,215-vertex ``BFM_UV.mat``, and a
stand-in on the real topology (real mean face, triangles, landmarks, UVs) must be read by
``prnet.data.bfm`` and turned into a position map of a real 300W-LP sample.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from prnet.data import bfm_prepare
from prnet.data.bfm_prepare import prepare_bfm, read_mat
from prnet.errors import DatasetError, OutputExistsError

#: generate.m's literal numbers, written out again here (not imported) as the independent expectation.
EXPECTED_UV_FIX = {10032: [10033, 10158], 10155: [10534, 10157, 10661], 10280: [10916, 10286]}
EXPECTED_MOUTH_ADD = [[6420, 6542, 6664], [6420, 6294, 6167], [6167, 6297, 6420], [6167, 6297, 6296],
                      [6167, 6296, 6295], [6167, 6295, 6039], [6168, 6295, 6039]]


def standin_inputs(rng, n_full=11000, n_trim=10950, k_shape=3, k_tex=2, k_exp=29, n_tri=300,
                   trim_index=None, mean=None, triangles=None, keypoints=None, uv_full=None,
                   shape_basis=None, exp_basis=None, exp_mean=None):
    """``{file name: {variable: value}}`` of every generate.m input, as the real files hold them.

    Optional real parts (0-based arrays on the trimmed topology, as in ``bfm_mean_53215.npz``):
    ``mean`` (n, 3) shape mean placed at the trimmed vertices, ``shape_basis`` / ``exp_basis``
    (3n, K), ``exp_mean`` (n, 3), ``triangles`` (T, 3), ``keypoints`` (68,), ``uv_full`` (N, 2)."""
    if trim_index is None:
        trim_index = np.sort(rng.choice(n_full, n_trim, replace=False)) + 1
    trim = np.asarray(trim_index, np.float64).reshape(-1, 1)                       # (n, 1) double, 1-based
    n_trim = len(trim)
    shape_mu = rng.normal(0, 5e4, (3 * n_full, 1)).astype(np.float32)
    shape_pc = rng.normal(0, 1e3, (3 * n_full, k_shape)).astype(np.float32)
    rows = (3 * (trim.astype(int) - 1) + np.arange(3)).reshape(-1)
    if mean is not None:
        shape_mu[rows, 0] = np.asarray(mean, np.float32).reshape(-1)
    if shape_basis is not None:
        shape_pc = np.zeros((3 * n_full, shape_basis.shape[1]), np.float32)
        shape_pc[rows] = shape_basis
    tri = (np.asarray(triangles).T + 1 if triangles is not None
           else rng.integers(1, n_trim + 1, (3, n_tri))).astype(np.float64)
    kpt = (np.asarray(keypoints).reshape(1, 68) + 1 if keypoints is not None
           else rng.choice(np.arange(1, n_trim + 1), (1, 68), replace=False)).astype(np.float64)
    if exp_basis is None:
        exp_basis = rng.normal(0, 100, (3 * n_trim, k_exp)).astype(np.float32)
    mu_exp = (np.asarray(exp_mean, np.float32).reshape(-1, 1) if exp_mean is not None
              else rng.normal(0, 10, (3 * n_trim, 1)).astype(np.float32))
    uv = uv_full if uv_full is not None else rng.uniform(0, 1, (n_full, 2))
    cell = np.empty((17, 1), dtype=object)
    for i in range(17):
        cell[i, 0] = rng.integers(1, n_trim + 1, (1, 3 + i)).astype(np.float64)
    cell2 = np.empty((1, 2), dtype=object)
    cell2[0, 0], cell2[0, 1] = np.array([[1.0, 2.0]]), np.array([[3.0]])
    mouth = tri[:, :114] if tri.shape[1] >= 114 else rng.integers(1, n_trim + 1, (3, 114)).astype(np.float64)
    return {
        "01_MorphableModel.mat": {
            "shapeMU": shape_mu, "shapePC": shape_pc, "shapeEV": np.arange(1, shape_pc.shape[1] + 1,
                                                                           dtype=np.float32)[:, None],
            "texMU": rng.uniform(0, 255, (3 * n_full, 1)).astype(np.float32),
            "texPC": rng.normal(0, 1, (3 * n_full, k_tex)).astype(np.float32),
            "texEV": np.ones((k_tex, 1), np.float32),
            "tl": rng.integers(1, n_full + 1, (50, 3)).astype(np.float64),
            "segbin": np.full((n_full, 4), 7.0),          # overridden by model_info's (quirk 5)
        },
        "model_info.mat": {
            "trimIndex": trim, "tri": tri, "keypoints": kpt,
            "symlist": rng.integers(1, n_trim + 1, (2, 40)).astype(np.float64),
            "symlist_tri": rng.integers(1, tri.shape[1] + 1, (2, 30)).astype(np.float64),
            "segbin": (rng.uniform(size=(n_full, 4)) > 0.5).astype(np.float64),
            "segbin_tri": (rng.uniform(size=(tri.shape[1], 4)) > 0.5).astype(np.float64),
        },
        "Model_Expression.mat": {"mu_exp": mu_exp, "w_exp": exp_basis.astype(np.float32),
                                 "sigma_exp": np.ones((exp_basis.shape[1], 1), np.float32)},
        "Model_tri_mouth.mat": {"tri_mouth": mouth},
        "Model_face_contour_trimed.mat": {
            "face_contour": rng.integers(1, n_trim + 1, (1, 30)).astype(np.float64),
            "face_contour_line": rng.integers(1, n_trim + 1, (1, 60)).astype(np.float64),
            "face_contour_front": rng.integers(1, n_trim + 1, (1, 30)).astype(np.float64),
            "face_contour_front_line": rng.integers(1, n_trim + 1, (1, 60)).astype(np.float64)},
        "Modelplus_nose_hole.mat": {
            "nose_hole": rng.integers(1, n_trim + 1, (1, 20)).astype(np.float64),
            "nose_hole_right": rng.integers(1, n_trim + 1, (1, 10)).astype(np.float64),
            "nose_hole_left": rng.integers(1, n_trim + 1, (1, 10)).astype(np.float64)},
        "Modelplus_parallel.mat": {"parallel": cell, "parallel_face_contour": cell2},
        "BFM_UV.mat": {"UV": np.asarray(uv, np.float64)},
    }


def write_standin(raw_dir, inputs, pncc: bool = True) -> Path:
    """Write ``inputs`` in face3d's layout (``raw/``, ``3ddfa/``, ``stn/``) as MATLAB v5 files."""
    raw_dir = Path(raw_dir)
    for name, variables in inputs.items():
        folder = raw_dir / bfm_prepare.INPUTS[name]
        folder.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(folder / name), variables)
    if pncc:
        scipy.io.savemat(str(raw_dir / "3ddfa" / "vertex_code.mat"), {"vertex_code": np.zeros((3, 4))})
    return raw_dir


def real_standin_inputs(shared_dir, rng):
    """Stand-in inputs on the REAL topology: the real mean face, triangles, landmarks and UVs (the full
    3DMMasSTN file; trimIndex recovered by matching its UVs with the trimmed file's), with the 68-landmark
    bases spread to all vertices (:func:`prnet.data.bfm.landmark_interpolated_model`) as the PCs."""
    from scipy.spatial import cKDTree

    from prnet.data.bfm import landmark_interpolated_model

    mean_dir = shared_dir / "reference" / "bfm-mean"
    uv_full = scipy.io.loadmat(shared_dir / "reference" / "bfm-uv" / "BFM_UV_53490.mat")["UV"]
    uv_trim = scipy.io.loadmat(shared_dir / "reference" / "bfm-uv" / "BFM_UV_53215.mat")["UV"]
    match = cKDTree(uv_full).query(uv_trim)[1] + 1
    for bad in EXPECTED_UV_FIX:                     # their UVs were changed: any unused vertex in the gap
        match[bad - 1] = match[bad - 2] + 1
    npz = np.load(mean_dir / "bfm_mean_53215.npz")
    model = landmark_interpolated_model(mean_dir / "bfm_mean_53215.npz", mean_dir / "bfm_kpt68_bases.npz")
    inputs = standin_inputs(rng, n_full=len(uv_full), trim_index=match, mean=npz["shape_mean"],
                            triangles=npz["triangles"], keypoints=npz["kpt_ind"], uv_full=uv_full,
                            shape_basis=model.shape_basis, exp_basis=model.exp_basis, exp_mean=npz["exp_mean"])
    return inputs, uv_trim


def _struct(path, name):
    s = scipy.io.loadmat(str(path))[name][0, 0]
    return {k: s[k] for k in s.dtype.names}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    rng = np.random.default_rng(22)
    inputs = standin_inputs(rng)
    raw = write_standin(tmp_path_factory.mktemp("raw"), inputs)
    out = tmp_path_factory.mktemp("out")
    done = prepare_bfm(raw, out)
    return inputs, raw, out, done


def test_outputs_equal_the_independent_expectation_field_by_field(small):
    inputs, _, out, done = small
    bfm, info = inputs["01_MorphableModel.mat"], inputs["model_info.mat"]
    exp, uv_in = inputs["Model_Expression.mat"], inputs["BFM_UV.mat"]["UV"]
    trim = info["trimIndex"][:, 0].astype(int)
    n = len(trim)

    def trimmed(full):   # vertex by vertex: rows 3(v-1), 3(v-1)+1, 3(v-1)+2 of each kept vertex v
        return np.concatenate([full[3 * (v - 1):3 * v] for v in trim])

    mouth_in = inputs["Model_tri_mouth.mat"]["tri_mouth"]
    mouth = np.concatenate([mouth_in, np.array(EXPECTED_MOUTH_ADD, np.float64).T], axis=1)
    expected_model = {
        "shapeMU": trimmed(bfm["shapeMU"]), "shapePC": trimmed(bfm["shapePC"]), "shapeEV": bfm["shapeEV"],
        "texMU": trimmed(bfm["texMU"]), "texPC": trimmed(bfm["texPC"]), "texEV": bfm["texEV"],
        "tri": info["tri"], "kpt_ind": info["keypoints"],
        "expMU": exp["mu_exp"], "expPC": exp["w_exp"], "expEV": exp["sigma_exp"], "tri_mouth": mouth,
    }
    model = _struct(out / "BFM.mat", "model")
    assert list(model) == list(expected_model)                      # the fields, in generate.m's order
    for key, want in expected_model.items():
        assert model[key].dtype == want.dtype and model[key].shape == want.shape, key
        np.testing.assert_array_equal(model[key], want, err_msg=key)
    assert model["shapeMU"].shape == (3 * n, 1) and model["tri_mouth"].shape == (3, 114 + 7)
    # Quirk: setdiff(all_ind, bad_ind) drops nothing -- triangle 38 is still column 38.
    np.testing.assert_array_equal(model["tri_mouth"][:, 37], mouth_in[:, 37])

    uv = np.array([uv_in[v - 1] for v in trim])
    for bad, around in EXPECTED_UV_FIX.items():
        uv[bad - 1] = sum(uv[a - 1] for a in around) / len(around)
    contour, nose = inputs["Model_face_contour_trimed.mat"], inputs["Modelplus_nose_hole.mat"]
    expected_info = {
        "kpt_ind": info["keypoints"], "trimIndex": info["trimIndex"], "symlist": info["symlist"],
        "symlist_tri": info["symlist_tri"], "segbin": np.array([info["segbin"][v - 1] for v in trim]).T,
        "segbin_tri": info["segbin_tri"].T, "tri_mouth": mouth, **contour, **nose,
    }
    got = _struct(out / "BFM_info.mat", "model_info")
    assert list(got) == [*expected_info, "parallel", "parallel_face_contour", "uv_coords"]
    for key, want in expected_info.items():
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
    np.testing.assert_allclose(got["uv_coords"], uv, rtol=0, atol=1e-15)
    cells = inputs["Modelplus_parallel.mat"]["parallel"]
    assert got["parallel"].shape == cells.shape
    for a, b in zip(got["parallel"].ravel(), cells.ravel()):
        np.testing.assert_array_equal(a, b)
    assert got["parallel_face_contour"].shape == (1, 2)
    uv_file = scipy.io.loadmat(str(out / "BFM_UV.mat"))
    assert [k for k in uv_file if not k.startswith("__")] == ["UV"]
    np.testing.assert_array_equal(uv_file["UV"], got["uv_coords"])
    assert uv_file["UV"].shape == (n, 2) and uv_file["UV"].dtype == np.float64
    # pncc_code.mat: a byte copy of the vertex_code.mat found (no pncc_code.mat among the inputs).
    assert done.files["pncc_code.mat"].read_bytes() == (small[1] / "3ddfa" / "vertex_code.mat").read_bytes()


def test_the_project_reads_the_output(small):
    """prnet.data.bfm (the builders' reader) takes the output unchanged: mean = shapeMU + expMU,
    triangles = tri + tri_mouth, 0-based."""
    from prnet.data.bfm import load_bfm

    inputs, _, out, _ = small
    model = load_bfm(out / "BFM.mat", out / "BFM_UV.mat")
    m = _struct(out / "BFM.mat", "model")
    n = m["shapeMU"].shape[0] // 3
    np.testing.assert_allclose(model.mean, (m["shapeMU"] + m["expMU"]).reshape(n, 3), rtol=1e-6)
    assert model.triangles.shape == (m["tri"].shape[1] + 121, 3) and model.triangles.min() >= 0
    assert model.kpt_ind.tolist() == (inputs["model_info.mat"]["keypoints"][0] - 1).astype(int).tolist()
    assert model.uv_coords.shape == (n, 2)


def test_mat73_inputs_give_the_same_output(small, tmp_path):
    """MATLAB v7.3 (HDF5) inputs -- arrays stored transposed, cells as references -- read as v5 ones."""
    h5py = pytest.importorskip("h5py")
    inputs, raw, out, _ = small
    raw73 = tmp_path / "raw73"
    shutil.copytree(raw, raw73)
    for name in ("Model_tri_mouth.mat", "Modelplus_parallel.mat", "model_info.mat"):
        path = raw73 / bfm_prepare.INPUTS[name] / name
        path.unlink()
        _write_mat73(h5py, path, inputs[name])
        assert scipy.io.matlab.matfile_version(open(path, "rb"))[0] == 2
    for name in ("Model_tri_mouth.mat", "Modelplus_parallel.mat"):
        back = read_mat(raw73 / "3ddfa" / name)
        for key, value in inputs[name].items():
            assert back[key].shape == value.shape, key
    prepare_bfm(raw73, tmp_path / "out73")
    for name in ("BFM.mat", "BFM_info.mat", "BFM_UV.mat"):
        a, b = scipy.io.loadmat(str(out / name)), scipy.io.loadmat(str(tmp_path / "out73" / name))
        key = {"BFM.mat": "model", "BFM_info.mat": "model_info", "BFM_UV.mat": "UV"}[name]
        if key == "UV":
            np.testing.assert_array_equal(a[key], b[key])
            continue
        for field in a[key].dtype.names:
            x, y = a[key][0, 0][field], b[key][0, 0][field]
            if x.dtype == object:
                assert all(np.array_equal(p, q) for p, q in zip(x.ravel(), y.ravel())), field
            else:
                np.testing.assert_array_equal(x, y, err_msg=field)


def _write_mat73(h5py, path, variables):
    """A MATLAB v7.3 file as MATLAB writes one: 512-byte header, column-major arrays (dims reversed),
    MATLAB_class attributes, cells as object references into ``#refs#``."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for name, value in variables.items():
            if value.dtype == object:
                ref = np.empty(value.T.shape, dtype=h5py.ref_dtype)
                for idx in np.ndindex(value.shape):
                    d = refs.create_dataset(f"{name}_{'_'.join(map(str, idx))}", data=value[idx].T)
                    d.attrs["MATLAB_class"] = np.bytes_("double")
                    ref[idx[::-1]] = d.ref
                ds = f.create_dataset(name, data=ref)
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                ds = f.create_dataset(name, data=value.T)
                ds.attrs["MATLAB_class"] = np.bytes_({"float64": "double", "float32": "single"}[value.dtype.name])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Dec  7 00:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


@pytest.mark.parametrize("name, variable, value, words", [
    ("model_info.mat", "trimIndex", "row", "trimIndex has shape (1, 10950)"),
    ("model_info.mat", "keypoints", None, "no variable keypoints"),
    ("Model_Expression.mat", "w_exp", "short", "w_exp has shape (32849, 29)"),
    ("01_MorphableModel.mat", "shapePC", "short", "shapePC has shape (32999, 3)"),
    ("Model_tri_mouth.mat", "tri_mouth", "zero", "tri_mouth must hold whole numbers in 1..10950"),
    ("BFM_UV.mat", "UV", "trimmed", "already trimmed"),
    ("Modelplus_parallel.mat", "parallel", None, "no variable parallel"),
    ("model_info.mat", "keypoints", "reshape", "keypoints has shape (2, 34)"),
    ("Model_Expression.mat", "mu_exp", "nan", "mu_exp holds non-finite values"),
])
def test_a_wrong_input_names_its_file_and_variable(small, tmp_path, name, variable, value, words):
    inputs = {k: dict(v) for k, v in small[0].items()}
    v = inputs[name]
    if value is None:
        del v[variable]
    elif value == "row":
        v[variable] = v[variable].T
    elif value == "short":
        v[variable] = v[variable][:-1]
    elif value == "zero":
        v[variable] = v[variable].copy()
        v[variable][0, 0] = 0
    elif value == "reshape":
        v[variable] = v[variable].reshape(2, 34)
    elif value == "nan":
        v[variable] = v[variable].copy()
        v[variable][5, 0] = np.nan
    elif value == "trimmed":
        v[variable] = v[variable][small[0]["model_info.mat"]["trimIndex"][:, 0].astype(int) - 1]
    raw = write_standin(tmp_path / "raw", inputs, pncc=False)
    with pytest.raises(DatasetError) as e:
        prepare_bfm(raw, tmp_path / "out")
    assert name in str(e.value) and variable in str(e.value) and words in str(e.value)
    assert not (tmp_path / "out" / "BFM.mat").exists()


def test_vectors_are_read_in_either_orientation(small, tmp_path):
    """MATLAB vectors (keypoints, the EV columns) are accepted as (n, 1) or (1, n) and copied as they are."""
    inputs = {k: dict(v) for k, v in small[0].items()}
    inputs["model_info.mat"]["keypoints"] = inputs["model_info.mat"]["keypoints"].T
    raw = write_standin(tmp_path / "raw", inputs, pncc=False)
    prepare_bfm(raw, tmp_path / "out")
    model = _struct(tmp_path / "out" / "BFM.mat", "model")
    assert model["kpt_ind"].shape == (68, 1)
    assert not (tmp_path / "out" / "pncc_code.mat").exists()


def test_missing_files_are_listed_and_outputs_not_overwritten(small, tmp_path):
    _, raw, out, _ = small
    (tmp_path / "raw" / "3ddfa").mkdir(parents=True)
    shutil.copy(raw / "3ddfa" / "model_info.mat", tmp_path / "raw" / "3ddfa")
    with pytest.raises(DatasetError) as e:
        prepare_bfm(tmp_path / "raw", tmp_path / "out")
    for missing in ("raw/01_MorphableModel.mat", "3ddfa/Model_Expression.mat", "stn/BFM_UV.mat"):
        assert missing in str(e.value)
    assert "faces.dmi.unibas.ch" in str(e.value) and "3DMMasSTN" in str(e.value)
    with pytest.raises(OutputExistsError):
        prepare_bfm(raw, out)


def test_the_uv_fix_reproduces_the_real_trimmed_uv_file(shared_dir):
    """3DMMasSTN's real 53,490-vertex UVs, trimmed and fixed, equal the real 53,215-vertex BFM_UV.mat
    (which differs from the plain trimmed UVs at exactly the three fixed vertices)."""
    inputs, uv_trim = real_standin_inputs(shared_dir, np.random.default_rng(0))
    trim = inputs["model_info.mat"]["trimIndex"][:, 0].astype(int)
    plain = inputs["BFM_UV.mat"]["UV"][trim - 1]
    differs = np.where(np.any(np.abs(plain - uv_trim) > 1e-9, axis=1))[0] + 1
    assert differs.tolist() == sorted(EXPECTED_UV_FIX)
    np.testing.assert_allclose(bfm_prepare.fix_uv(plain), uv_trim, rtol=0, atol=1e-12)


@pytest.fixture(scope="session")
def real_topology_bfm(shared_dir, tmp_path_factory):
    """prnet-prepare-bfm's output from stand-in inputs on the real topology (``BFM.mat`` + ``BFM_UV.mat``)."""
    inputs, _ = real_standin_inputs(shared_dir, np.random.default_rng(1))
    raw = write_standin(tmp_path_factory.mktemp("raw_real"), inputs)
    out = tmp_path_factory.mktemp("bfm_real")
    prepare_bfm(raw, out)
    return raw, out


def test_the_builders_accept_the_output(real_topology_bfm, samples_dir, uv_template):
    """The builders' loader reads the output; a real 300W-LP sample becomes a position map whose
    landmark pixels agree with the sample's own 2D landmarks (the real mean + landmark bases)."""
    from prnet.core.images import read_image
    from prnet.core.uv import landmarks_from_posmap
    from prnet.data.annotations import load_fit
    from prnet.data.posmap import load_model_files, make_example

    _, out = real_topology_bfm
    bfm, rasterizer = load_model_files(out)
    assert bfm.n_vertices == 53215 and bfm.triangles.shape == (105840 + 121, 3)
    mat = sorted((samples_dir / "300w-lp" / "AFW").glob("*.mat"))[0]
    fit = load_fit(mat)
    ex = make_example(read_image(mat.with_suffix(".jpg")), fit, bfm, rasterizer)
    assert ex.posmap.shape == (256, 256, 3) and np.isfinite(ex.posmap).all()
    covered = np.any(ex.posmap != 0, axis=2)
    assert covered[uv_template.face_mask > 0].mean() > 0.95
    lm = landmarks_from_posmap(ex.posmap, uv_template)[:, :2]
    np.testing.assert_allclose(lm, ex.landmarks_68[:, :2], atol=2.0)
