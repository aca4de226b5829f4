"""Feature extraction and pair matching of a map build as Ray tasks (``vloc build-map --ray ADDRESS``).

The head reads every image once: a folder's image files as they are on disk, a bag's decoded frames
as lossless PNG. It ships them in shards to the workers, which extract features with the build's
extractor; each shard's features come back to the head, which puts them into the feature cache as
they arrive, so a build killed as a whole resumes from the cache as a single-machine one does.
Matching puts each image's features into the object store once; a task matches a shard of pairs and
takes only the features its pairs name. Pair selection, reconstruction (pycolmap) and the indexes run
on the head, so a build on a cluster and one on a single machine make the same map.

A worker that dies costs its shard: Ray runs the task again on another worker (``MAX_RETRIES``).
Ray is an optional dependency (``pip install vloc_ros[ray]``); only this module imports it.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator

import cv2
import numpy as np

from ..features import Features, create_extractor
from ..features.matching import create_matcher
from ..geometry import Camera
from .builder import BuildError, extract_image
from .sources import MapFrame, decode_image_rgb

# Ray's retries of a task whose worker process died (a killed or crashed worker, a lost node).
MAX_RETRIES = 3


@dataclass(frozen=True)
class ShardSizes:
    # Shards amortise a task's overhead (~1 ms) and the object store's per-object cost; small enough
    # that a lost worker costs little and the shards spread over the workers.
    images_per_task: int = 4
    pairs_per_task: int = 128


class RayCluster:
    """A connection to a Ray cluster for a build: ``with RayCluster("auto") as cluster: build_map(...,
    cluster=cluster)``.

    ``address``: ``"local"`` starts a Ray instance on this machine for the build; ``"auto"`` joins the
    cluster this machine is part of (``ray start``); ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` joins that
    cluster. A connection made before (``ray.init`` by the caller) is used as it is and left open.
    """

    def __init__(self, address: str, shards: ShardSizes = ShardSizes()):
        try:
            import ray
        except ImportError:
            raise BuildError(
                "--ray needs Ray, which is not installed: pip install 'vloc_ros[ray]' (make setup installs it)"
            ) from None
        self._ray = ray
        self.address = address
        self.shards = shards
        self._connected_here = False
        options = {"num_cpus": 1, "max_retries": MAX_RETRIES}
        self._extract_task = ray.remote(**options)(extract_shard)
        self._match_task = ray.remote(**options)(match_shard)

    def __enter__(self) -> RayCluster:
        if not self._ray.is_initialized():
            check_reachable(self.address)
            try:
                self._ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
                raise BuildError(f"cannot connect to the Ray cluster at {self.address!r}: {error}") from None
            self._connected_here = True
        return self

    def __exit__(self, *exc) -> None:
        if self._connected_here:
            self._ray.shutdown()
            self._connected_here = False

    @property
    def num_workers(self) -> int:
        """The CPUs of the cluster: one task each at a time."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def extract(self, frames: Iterable[tuple[int, MapFrame]], extractor) -> Iterator[tuple[int, Features | str]]:
        """For each (key, frame): its features, or why it has none, as the workers finish them (in no
        particular order). ``extractor`` is the head's: each worker makes its twin from its config and
        a worker whose weights differ fails the build."""
        config = json.dumps(extractor.config, sort_keys=True)
        tasks = _Tasks(self._ray, 2 * self.num_workers)
        shard = []
        for key, frame in frames:
            try:
                shard.append((key, frame.name, frame.camera, *image_payload(frame)))
            except (ValueError, OSError) as error:
                yield key, f"cannot read the image: {error}"
                continue
            if len(shard) == self.shards.images_per_task:
                yield from _checked(tasks.submit(self._extract_task, config, shard), extractor)
                shard = []
        if shard:
            yield from _checked(tasks.submit(self._extract_task, config, shard), extractor)
        yield from _checked(tasks.drain(), extractor)

    def match(
        self, matcher, pairs: list[tuple[int, int]], features: dict[int, Features]
    ) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        """Each pair with its matches (``matcher.match`` of the pair's features), as the workers
        finish them. Each image's features go to the object store once and leave it after the last
        shard naming them has been submitted."""
        config = json.dumps(matcher.config, sort_keys=True)
        tasks = _Tasks(self._ray, 2 * self.num_workers)
        shards = [pairs[i : i + self.shards.pairs_per_task] for i in range(0, len(pairs), self.shards.pairs_per_task)]
        shard_images = [sorted({image for pair in shard for image in pair}) for shard in shards]
        last_use = {image: index for index, images in enumerate(shard_images) for image in images}
        stored = {}
        for index, (shard, images) in enumerate(zip(shards, shard_images)):
            for image in images:
                if image not in stored:
                    stored[image] = self._ray.put(features[image])
            finished = tasks.submit(self._match_task, config, shard, images, *(stored[image] for image in images))
            for image in images:
                if last_use[image] == index:
                    del stored[image]  # the submitted task holds its own reference until it ends
            for done in finished:
                yield from done
        for done in tasks.drain():
            yield from done


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers on is a BuildError now: Ray itself retries
    an unreachable cluster for minutes."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BuildError(f"--ray {address!r}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise BuildError(f"cannot connect to the Ray cluster at {address!r}: {error}") from None


class _Tasks:
    """Submitted tasks, at most ``limit`` at a time: the head reads and ships images only as fast as
    the workers take them, so a bag never lands in the object store whole."""

    def __init__(self, ray, limit: int):
        self._ray, self._limit, self._pending = ray, limit, []

    def submit(self, task, *args) -> list:
        """Submit ``task(*args)``; the results of the tasks waited for while at the limit."""
        self._pending.append(task.remote(*args))
        finished = []
        while len(self._pending) >= self._limit:
            finished.append(self._next_done())
        return finished

    def drain(self) -> Iterator:
        while self._pending:
            yield self._next_done()

    def _next_done(self):
        (done,), self._pending = self._ray.wait(self._pending, num_returns=1)
        return self._ray.get(done)


def _checked(shard_results: Iterable, extractor) -> Iterator[tuple[int, Features | str]]:
    for weights_sha256, results in shard_results:
        if weights_sha256 != extractor.weights_sha256:
            raise BuildError(
                f"a Ray worker extracts with other {extractor.name} weights (sha256 {weights_sha256[:12]}) than "
                f"this machine ({extractor.weights_sha256[:12]}); install the same vloc_ros on every node"
            )
        yield from results


def image_payload(frame: MapFrame) -> tuple[str, bytes]:
    """What a worker needs to decode ``frame``'s image exactly as ``frame.load_image()`` does: the
    image file's bytes, or the decoded image as lossless PNG."""
    if frame.read_file is not None:
        return "file", frame.read_file()
    image = frame.load_image()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"cannot encode image {frame.name} of shape {image.shape} as PNG")
    return "png", png.tobytes()


def decode_payload(kind: str, data: bytes, name: str) -> np.ndarray:
    """The image ``image_payload`` shipped; ValueError (the image is skipped) when it does not decode."""
    if kind == "file":
        return decode_image_rgb(data, name)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode the PNG of image {name} shipped by the head")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


@lru_cache(maxsize=2)
def _worker_extractor(config: str):
    """A worker process keeps its extractor between tasks: loading the weights costs more than a shard."""
    return create_extractor(json.loads(config))


@lru_cache(maxsize=2)
def _worker_matcher(config: str):
    return create_matcher(json.loads(config))


def extract_shard(
    extractor_config: str, shard: list[tuple[int, str, Camera, str, bytes]]
) -> tuple[str, list[tuple[int, Features | str]]]:
    """A Ray task: the weights' sha256 of the extractor it ran, and per (key, name, camera, payload)
    the image's features or why it has none."""
    extractor = _worker_extractor(extractor_config)
    results = []
    for key, name, camera, kind, data in shard:
        try:
            results.append((key, extract_image(decode_payload(kind, data, name), camera, extractor)))
        except ValueError as error:
            results.append((key, str(error)))
    return extractor.weights_sha256, results


def match_shard(
    matcher_config: str, pairs: list[tuple[int, int]], images: list[int], *features: Features
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """A Ray task: each pair of image ids with its matches; ``features`` are those of ``images``."""
    matcher = _worker_matcher(matcher_config)
    by_image = dict(zip(images, features))
    return [((i, j), matcher.match(by_image[i], by_image[j])) for i, j in pairs]
