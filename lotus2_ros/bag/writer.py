"""Writing the output bag with ``rosbags``: copied input topics, the node's output topics, merging.

Every connection carries its message definition and RIHS01 hash in the bag (the output types
come from the typestore of :func:`~lotus2_ros.io.msg_types.rosbags_types`, which registers
``lotus2_ros/msg/ScaleFit`` from ``msg/``), so ``ros2 bag play`` and other readers need nothing
else. Bags are written in rosbag2 format version 8, which Humble, Jazzy and Kilted read.

Compression (:class:`BagCompression`, zstd by default) is lossless and what rosbag2 reads
natively: in mcap, zstd **chunk** compression (the mcap storage plugin decompresses it); in
sqlite3, rosbag2's **message** compression mode (each message zstd-compressed, declared in
``metadata.yaml``; read through rosbag2's compression plugin, ``rosbag2_compression_zstd``, part
of every rosbag2 install). zstd runs on several cores (its own worker threads, which also
overlap with the writer thread's other work), so compressing does not make the writer the slow
part of a run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BagError, BagReadError

STORAGES = ("sqlite3", "mcap")
BAG_VERSION = 8
#: Page size of the sqlite3 files written. Outputs are mostly multi-MB blobs: with 64 KiB pages
#: (SQLite's largest) a blob spans 16 times fewer overflow pages than with the default 4 KiB,
#: which makes inserting it markedly cheaper. Readers (rosbag2, rosbags) accept any page size.
SQLITE_PAGE_SIZE = 65536
#: Messages from this size on are written into the sqlite3 file piece by piece (see
#: :meth:`OutputBag.write_parts`) rather than bound as one parameter, which SQLite copies twice.
BLOB_WRITE_MIN_BYTES = 64 * 1024
#: SQLite page cache of the files written (KiB; the default is 2 MiB). A large message is first
#: inserted as zeros and then overwritten (see :meth:`OutputBag.write_parts`): with its pages
#: still in the cache the second pass does not read them back from the file.
SQLITE_CACHE_KIB = 64 * 1024


COMPRESSIONS = ("zstd", "none")


def default_compression_threads() -> int:
    """zstd worker threads by default: the machine's cores, up to 8 (more stop paying off)."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class BagCompression:
    """How the output bag is compressed (losslessly).

    Attributes:
        format: ``"zstd"`` or ``"none"``.
        level: zstd level (1 fast .. 19 small; negative: faster still). 1 by default: the
            outputs are mostly float images, where higher levels buy little and cost much time.
        threads: zstd worker threads (1: compress on the writer thread itself). Does not change
            the bytes a reader gets back.
    """

    format: str = "zstd"
    level: int = 1
    threads: int = 0  # 0: default_compression_threads()

    def __post_init__(self):
        if self.format not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {self.format!r}")
        if not -7 <= self.level <= 22:
            raise ValueError(f"compression level must be in -7..22, got {self.level}")
        if self.threads < 0:
            raise ValueError(f"compression threads must be >= 0 (0: default), got {self.threads}")
        if self.threads == 0:
            object.__setattr__(self, "threads", default_compression_threads())

    @property
    def enabled(self) -> bool:
        return self.format != "none"

    def describe(self) -> str:
        return "none" if not self.enabled else f"{self.format} level {self.level}, {self.threads} thread(s)"


NO_COMPRESSION = BagCompression("none")


def _zstd_module() -> Any:
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:  # rosbags' own dependency on older Pythons
        from backports import zstd
    return zstd


class _Compressor:
    """A reusable zstd compressor (one frame per call) with :class:`BagCompression`'s level and threads."""

    #: zstd's multi-threaded jobs: small enough that a camera-size message spreads over the threads.
    JOB_SIZE = 1 << 20

    def __init__(self, compression: BagCompression):
        zstd = self._zstd = _zstd_module()
        options = {zstd.CompressionParameter.compression_level: compression.level}
        if compression.threads > 1:
            options[zstd.CompressionParameter.nb_workers] = compression.threads
            options[zstd.CompressionParameter.job_size] = self.JOB_SIZE
        self._cctx = zstd.ZstdCompressor(options=options)

    def __call__(self, parts: list[Any] | bytes) -> bytes:
        """One zstd frame of the concatenation of ``parts`` (buffers), without joining them first."""
        cctx, zstd = self._cctx, self._zstd
        if not isinstance(parts, list):
            return cctx.compress(parts, mode=zstd.ZstdCompressor.FLUSH_FRAME)
        out = [cctx.compress(p, mode=zstd.ZstdCompressor.CONTINUE) for p in parts]
        out.append(cctx.flush(mode=zstd.ZstdCompressor.FLUSH_FRAME))
        return b"".join(out)


def _plugin(storage: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
    return StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP


def node_qos() -> list[Any]:
    """The offered QoS of the node's output publishers (reliable, keep last 1, volatile)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.VOLATILE, zero, zero,
                QosLiveliness.AUTOMATIC, zero, False)]


class OutputBag:
    """A rosbag2 bag being written. Context manager: closes (complete) on success, aborts on error."""

    def __init__(self, path: Path, storage: str, typestore: Any, *, tuned: bool = True,
                 compression: BagCompression = NO_COMPRESSION):
        """Args:
            path: Bag folder to create (must not exist).
            storage: ``"sqlite3"`` or ``"mcap"``.
            typestore: Where the definitions of :meth:`add_topic` types and :meth:`write_message`
                serialisation come from.
            tuned: sqlite3 with :data:`SQLITE_PAGE_SIZE` pages, a larger cache and direct blob
                writes (the same rows, faster); False: SQLite's defaults and rosbags' writes only,
                as ``ros2 bag record`` lays out a file (the synthetic input bags).
            compression: zstd chunk (mcap) or message (sqlite3) compression, or none.
        """
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, Writer

        self.path = Path(path)
        self.storage = storage
        self.typestore = typestore
        self.compression = compression
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=_plugin(storage))
        # sqlite3: messages are compressed here (the level and threads chosen, pieces without a
        # join) and stored past rosbags' Writer.write, which would compress them once more.
        self._compress: _Compressor | None = None
        if compression.enabled:
            mode = CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        self._by_key: dict[tuple[str, str], Any] = {}
        self._open = False
        self._tuned = tuned
        self._sqlite: Any = None  # the sqlite3 connection, when messages can be written as blobs

    def __enter__(self) -> OutputBag:
        self.open()
        return self

    def __exit__(self, exc_type: Any, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        self._writer.open()
        self._open = True
        if self.storage == "sqlite3" and self._tuned:
            self._sqlite = _sqlite_fast_path(self._writer)
        if self.compression.enabled:
            compressor = _Compressor(self.compression)
            if self.storage == "mcap":
                storage = self._writer.storage
                if getattr(storage, "compression", None) != "zstd" or not hasattr(storage, "compressor"):
                    raise BagError("this rosbags version does not compress mcap chunks as expected; "
                                   "use --compression none")
                storage.compressor = compressor  # every chunk: zstd at our level, on our threads
            else:
                self._compress = compressor

    def close(self) -> None:
        """Finish the storage and write ``metadata.yaml`` (the bag is complete)."""
        if self._open:
            self._open = False
            self._sqlite = None
            self._writer.close()

    def abort(self) -> None:
        """Stop without ``metadata.yaml`` (the folder is not a readable bag)."""
        if self._open:
            self._open = False
            self._sqlite = None
            self._writer.abort()

    @property
    def topics(self) -> list[str]:
        return [c.topic for c in self._writer.connections]

    def add_copy(self, connection: Any, typestore: Any = None) -> Any:
        """A connection for copies of an input ``connection`` (its definition, hash and QoS).

        Input connections with the same topic and type (a bag recorded in parts) share one.
        """
        key = (connection.topic, connection.msgtype)
        if key in self._by_key:
            return self._by_key[key]
        msgdef, digest = connection.msgdef.data, connection.digest
        if not msgdef or not digest:  # old bags may lack them: regenerate from the types
            store = typestore if typestore is not None and connection.msgtype in typestore.fielddefs \
                else self.typestore
            msgdef, _ = store.generate_msgdef(connection.msgtype, ros_version=2)
            digest = store.hash_rihs01(connection.msgtype)
        conn = self._writer.add_connection(
            connection.topic, connection.msgtype, msgdef=msgdef, rihs01=digest,
            serialization_format=getattr(connection.ext, "serialization_format", "cdr"),
            offered_qos_profiles=list(getattr(connection.ext, "offered_qos_profiles", []) or []))
        self._by_key[key] = conn
        return conn

    def add_topic(self, topic: str, msgtype: str, qos: list[Any] | None = None) -> Any:
        """A connection for ``topic`` of ``msgtype`` (definition from the typestore)."""
        key = (topic, msgtype)
        if key not in self._by_key:
            self._by_key[key] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=node_qos() if qos is None else qos)
        return self._by_key[key]

    def write(self, connection: Any, timestamp_ns: int, raw: bytes | memoryview) -> None:
        if self._compress is not None or (self._sqlite is not None and len(raw) >= BLOB_WRITE_MIN_BYTES):
            self.write_parts(connection, timestamp_ns, [raw])
        else:
            self._writer.write(connection, int(timestamp_ns), raw)

    def write_parts(self, connection: Any, timestamp_ns: int, parts: list[Any]) -> int:
        """Write one message given as consecutive buffers (its bytes are their concatenation); returns its size.

        In sqlite3 a large message is inserted as a zero-filled blob of its size, which the pieces
        are then copied into (``Connection.blobopen``): no contiguous copy of the message is made.
        With message compression the pieces are compressed into one zstd frame (again without
        joining them) and stored the same way. The bag's rows, counts and metadata are exactly
        those of ``rosbags``' ``Writer.write`` (with its compression, at this level).
        The returned size is the message's, uncompressed.
        """
        views = [memoryview(p).cast("B") for p in parts]
        size = sum(v.nbytes for v in views)
        timestamp_ns = int(timestamp_ns)
        w = self._writer
        if self._compress is not None:  # sqlite3 message compression: compress, then store as it is
            if connection not in w.connections:  # as Writer.write
                from rosbags.rosbag2 import WriterError

                raise WriterError(f"Tried to write to unknown connection {connection!r}.")
            data = self._compress(views)
            if self._sqlite is not None and len(data) >= BLOB_WRITE_MIN_BYTES:
                self._insert_blob(connection, timestamp_ns, [data])
            else:
                w.storage.write(connection, timestamp_ns, data)
                self._count(connection, timestamp_ns)
            return size
        if self._sqlite is None or size < BLOB_WRITE_MIN_BYTES:
            w.write(connection, timestamp_ns, views[0] if len(views) == 1 else b"".join(views))
            return size
        if connection not in w.connections:  # as Writer.write
            from rosbags.rosbag2 import WriterError

            raise WriterError(f"Tried to write to unknown connection {connection!r}.")
        self._insert_blob(connection, timestamp_ns, views)
        return size

    def _insert_blob(self, connection: Any, timestamp_ns: int, views: list[Any]) -> None:
        """The row ``Writer.write`` would insert, with the data copied in piece by piece."""
        size = sum(memoryview(v).nbytes for v in views)
        cursor = self._sqlite.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES(?, ?, zeroblob(?))",
                                      (connection.id, timestamp_ns, size))
        with self._sqlite.blobopen("messages", "data", cursor.lastrowid) as blob:
            for v in views:
                blob.write(v)
        self._count(connection, timestamp_ns)

    def _count(self, connection: Any, timestamp_ns: int) -> None:
        """The bookkeeping of ``Writer.write`` (message counts and time range for metadata.yaml)."""
        w = self._writer
        w.counts[connection.id] += 1
        w.min_timestamp = min(timestamp_ns, w.min_timestamp)
        w.max_timestamp = max(timestamp_ns, w.max_timestamp)

    def write_message(self, connection: Any, timestamp_ns: int, msg: Any) -> int:
        """Serialise ``msg`` (CDR) and write it; returns the byte count.

        The bytes are those of ``typestore.serialize_cdr``; images and clouds are written without
        copying their payload into one buffer first (see :mod:`~lotus2_ros.bag.cdr`).
        """
        from .cdr import serialize_cdr_parts

        return self.write_parts(connection, timestamp_ns, serialize_cdr_parts(self.typestore, msg, connection.msgtype))


def _sqlite_fast_path(writer: Any) -> Any:
    """Prepare a just-opened rosbags sqlite3 ``Writer`` for large blobs; its connection for :meth:`OutputBag.write_parts`.

    Sets :data:`SQLITE_PAGE_SIZE` (the file has only its empty schema yet; ``VACUUM`` applies it)
    and :data:`SQLITE_CACHE_KIB`.
    Returns None, leaving every write to rosbags, where this rosbags or Python lacks what the
    direct blob writes rely on (``Connection.blobopen`` is Python >= 3.11).
    """
    import sqlite3

    storage = getattr(writer, "storage", None)
    conn = getattr(storage, "conn", None)
    if not isinstance(conn, sqlite3.Connection) or conn.in_transaction:
        return None
    conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    conn.execute("VACUUM")
    conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    usable = (hasattr(conn, "blobopen") and getattr(writer, "compression_mode", None) is not None
              and writer.compression_mode.name in ("NONE", "MESSAGE")
              and isinstance(getattr(writer, "counts", None), dict)
              and isinstance(getattr(writer, "min_timestamp", None), int)
              and isinstance(getattr(writer, "max_timestamp", None), int))
    return conn if usable else None


def merge_bags(sources: list[Path], dest: Path, storage: str, typestore: Any,
               compression: BagCompression = NO_COMPRESSION) -> int:
    """Copy the messages of ``sources`` (in order) into one new bag ``dest``; returns the count.

    Connections are created in the order of their first appearance in the sources, so parts
    written with the same connection list give the same list.
    """
    from rosbags.rosbag2 import Reader

    count = 0
    with OutputBag(dest, storage, typestore, compression=compression) as out:
        for src in sources:
            try:
                with Reader(src) as reader:
                    conns = {c.id: out.add_copy(c) for c in reader.connections}
                    for conn, t, raw in reader.messages():
                        out.write(conns[conn.id], t, raw)
                        count += 1
            except BagError:
                raise
            except Exception as err:  # noqa: BLE001 - rosbags reader errors of a damaged part
                raise BagReadError(f"cannot read the partial output {src}: {type(err).__name__}: {err}") from err
    return count


class BackgroundWriter:
    """Runs write jobs on one worker thread, in submission order.

    Serialising and writing a frame's outputs (tens of MB at 640×480) is disk-bound; on the worker
    it overlaps the next frame's network forwards instead of adding to every frame. The queue is
    bounded (``max_pending`` jobs), so memory stays bounded and a slow disk throttles the run.
    A failed job stops the worker; the error is raised in the caller's thread by the next
    :meth:`submit` or :meth:`flush`, and :attr:`failed` tells that the bag may be half-written.
    Everything that touches the bag (open, writes, close/abort) must run here: sqlite3
    connections belong to the thread that opened them — :meth:`call` runs a function on the
    worker even after a failure and returns its result.
    """

    def __init__(self, max_pending: int = 3):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._done = threading.Condition()
        self._submitted = 0
        self._finished = 0
        #: ``(kind, ms)`` of every finished job, for the summary (appended by the worker).
        self.timings: list[tuple[str, float]] = []
        self._thread = threading.Thread(target=self._run, name="lotus2_bag_writer", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def _run(self) -> None:
        import time

        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, job = item
            if kind == "call":
                job()  # reports its own outcome
            elif self._error is None:
                t0 = time.perf_counter()
                try:
                    job()
                except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                    self._error = err
                self.timings.append((kind, (time.perf_counter() - t0) * 1e3))
            with self._done:
                self._finished += 1
                self._done.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise BagError(f"writing the output failed: {type(self._error).__name__}: {self._error}") from self._error

    def submit(self, kind: str, job: Any) -> float:
        """Queue ``job()``; returns the ms spent waiting for room in the queue."""
        import time

        self._check()
        t0 = time.perf_counter()
        self._queue.put((kind, job))
        self._submitted += 1
        return (time.perf_counter() - t0) * 1e3

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the worker after what is queued (even after a failure); its result or error."""
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["result"] = fn()
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = err

        self._queue.put(("call", job))
        self._submitted += 1
        with self._done:
            self._done.wait_for(lambda: self._finished >= self._submitted)
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def flush(self) -> None:
        """Wait until every submitted job has run; raise if one failed."""
        with self._done:
            self._done.wait_for(lambda: self._finished >= self._submitted)
        self._check()

    def close(self) -> None:
        """Run what is queued, then stop the worker (does not raise for failed jobs)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
