"""Source-target distance: the Fréchet distance against closed forms, and on real collections."""

from __future__ import annotations

import numpy as np
import pytest

from artlab.analysis import collection_distance, frechet_distance
from artlab.analysis.distance import collection_features, gaussian


def random_covariance(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(size=(n, n))
    return a @ a.T + 0.1 * np.eye(n)


def test_equal_covariances_leave_the_squared_mean_difference():
    rng = np.random.default_rng(0)
    sigma = random_covariance(rng, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6)
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0, abs=1e-8)


def test_diagonal_covariances_closed_form():
    """For diagonal covariances the distance is sum (m1 - m2)^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    rng = np.random.default_rng(1)
    s1, s2 = rng.uniform(0.1, 4, 30), rng.uniform(0.1, 4, 30)
    mu1, mu2 = rng.normal(size=30), rng.normal(size=30)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-8)


def test_one_dimension_and_singular_covariances():
    # 1-D Gaussians: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx(4 + 1)
    # fewer samples than dimensions (as with 1,280 features and a small collection): singular but usable
    rng = np.random.default_rng(2)
    a = rng.normal(size=(10, 40))
    mu, sigma = gaussian(a)
    assert np.linalg.matrix_rank(sigma) < 40
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6 * np.trace(sigma))
    with pytest.raises(ValueError, match="disagree"):
        frechet_distance(mu, sigma, mu[:5], sigma)


def test_the_trace_of_the_root_is_the_reference_codes_sqrtm():
    """Against the FID reference code's Tr(sqrtm(S1 S2)), full-rank and singular (fewer samples than features)."""
    from scipy import linalg

    from artlab.analysis.distance import trace_sqrt_product

    rng = np.random.default_rng(3)
    for s1, s2 in [(random_covariance(rng, 50), random_covariance(rng, 50)),
                   (gaussian(rng.normal(size=(30, 80)))[1], gaussian(rng.normal(size=(20, 80)) * 3)[1])]:
        reference = np.trace(linalg.sqrtm(s1 @ s2)).real
        assert trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-7)
        assert trace_sqrt_product(s2, s1) == pytest.approx(reference, rel=1e-7)


def test_float32_statistics_of_fewer_images_than_features_are_usable():
    """Covariances computed in float32 (as torch computes them) from 100 images of 1,280 features: rounding leaves
    eigenvalues a little below zero, which are no reason to refuse; the distance is the float64 one."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(100, 1280)), rng.normal(size=(120, 1280)) * 1.5 + 0.1
    exact = frechet_distance(*gaussian(a), *gaussian(b))
    single = [(x.mean(axis=0), np.cov(x, rowvar=False, dtype=np.float32))
              for x in (a.astype(np.float32), b.astype(np.float32))]
    assert single[0][1].dtype == np.float32
    assert frechet_distance(*single[0], *single[1]) == pytest.approx(exact, rel=1e-4)


def test_a_matrix_with_negative_eigenvalues_is_no_covariance():
    """Non-negative variances, yet not positive semi-definite: refused, whichever side it is on."""
    mu, sigma = np.zeros(2), np.eye(2)
    not_psd = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    for args in ((mu, not_psd, mu, sigma), (mu, sigma, mu, not_psd)):
        with pytest.raises(ValueError, match="negative eigenvalue .*not a covariance"):
            frechet_distance(*args)
    with pytest.raises(ValueError, match="second covariance is not symmetric"):
        frechet_distance(mu, sigma, mu, np.array([[1.0, 0.5], [0.0, 1.0]]))


def test_a_collection_is_at_distance_zero_from_itself(small_synthetic):
    result = collection_distance(small_synthetic, small_synthetic, image_size=64, device="cpu")
    features = collection_features(small_synthetic, image_size=64, device="cpu")
    assert result.images_a == result.images_b == len(small_synthetic) == len(features)
    assert result.mean_distance == 0
    assert 0 <= result.frechet < 1e-6 * np.trace(np.cov(features, rowvar=False))
    assert result.layer == "features.18" and "Fréchet distance" in str(result)


def test_distance_from_the_command_line(small_synthetic, capsys):
    from artlab.cli import main

    manifest = str(small_synthetic.table["path"][0]).rsplit("/", 2)[0] + "/manifest.csv"
    assert main(["distance", manifest, manifest, "--image-size", "64", "--device", "cpu"]) == 0
    assert "distance between the means: 0.0000" in capsys.readouterr().out


@pytest.mark.slow
def test_another_collection_is_further_than_half_of_the_same(genres_dir, peopleart_dir):
    from artlab.data import load

    genres, people = load(genres_dir), load(peopleart_dir)
    rng = np.random.default_rng(0)
    half = genres.subset(rng.permutation(len(genres)) < len(genres) // 2)
    sample = people.subset(rng.permutation(len(people)) < len(genres) // 2)  # the same size as the half
    near = collection_distance(genres, half, image_size=64, device="cpu")
    far = collection_distance(genres, sample, image_size=64, device="cpu")
    assert near.images_b == far.images_b == len(genres) // 2
    assert far.frechet > 2 * near.frechet and far.mean_distance > 2 * near.mean_distance
