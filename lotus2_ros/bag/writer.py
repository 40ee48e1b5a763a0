"""Writing the output bag with ``rosbags``: copied input topics, the node's output topics, merging.

Every connection carries its message definition and RIHS01 hash in the bag (the output types
come from the typestore of :func:`~lotus2_ros.io.msg_types.rosbags_types`, which registers
``lotus2_ros/msg/ScaleFit`` from ``msg/``), so ``ros2 bag play`` and other readers need nothing
else. Bags are written in rosbag2 format version 8, which Humble, Jazzy and Kilted read.
"""

from __future__ import annotations

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

    def __init__(self, path: Path, storage: str, typestore: Any, *, tuned: bool = True):
        """Args:
            path: Bag folder to create (must not exist).
            storage: ``"sqlite3"`` or ``"mcap"``.
            typestore: Where the definitions of :meth:`add_topic` types and :meth:`write_message`
                serialisation come from.
            tuned: sqlite3 with :data:`SQLITE_PAGE_SIZE` pages, a larger cache and direct blob
                writes (the same rows, faster); False: SQLite's defaults and rosbags' writes only,
                as ``ros2 bag record`` lays out a file (the synthetic input bags).
        """
        from rosbags.rosbag2 import Writer

        self.path = Path(path)
        self.storage = storage
        self.typestore = typestore
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=_plugin(storage))
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
        if self._sqlite is not None and len(raw) >= BLOB_WRITE_MIN_BYTES:
            self.write_parts(connection, timestamp_ns, [raw])
        else:
            self._writer.write(connection, int(timestamp_ns), raw)

    def write_parts(self, connection: Any, timestamp_ns: int, parts: list[Any]) -> int:
        """Write one message given as consecutive buffers (its bytes are their concatenation); returns its size.

        In sqlite3 a large message is inserted as a zero-filled blob of its size, which the pieces
        are then copied into (``Connection.blobopen``): no contiguous copy of the message is made.
        The bag's rows, counts and metadata are exactly those of ``rosbags``' ``Writer.write``.
        """
        views = [memoryview(p).cast("B") for p in parts]
        size = sum(v.nbytes for v in views)
        timestamp_ns = int(timestamp_ns)
        if self._sqlite is None or size < BLOB_WRITE_MIN_BYTES:
            self._writer.write(connection, timestamp_ns, views[0] if len(views) == 1 else b"".join(views))
            return size
        w = self._writer
        if connection not in w.connections:  # as Writer.write
            from rosbags.rosbag2 import WriterError

            raise WriterError(f"Tried to write to unknown connection {connection!r}.")
        cursor = self._sqlite.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES(?, ?, zeroblob(?))",
                                      (connection.id, timestamp_ns, size))
        with self._sqlite.blobopen("messages", "data", cursor.lastrowid) as blob:
            for v in views:
                blob.write(v)
        w.counts[connection.id] += 1
        w.min_timestamp = min(timestamp_ns, w.min_timestamp)
        w.max_timestamp = max(timestamp_ns, w.max_timestamp)
        return size

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
              and writer.compression_mode.name == "NONE" and isinstance(getattr(writer, "counts", None), dict)
              and isinstance(getattr(writer, "min_timestamp", None), int)
              and isinstance(getattr(writer, "max_timestamp", None), int))
    return conn if usable else None


def merge_bags(sources: list[Path], dest: Path, storage: str, typestore: Any) -> int:
    """Copy the messages of ``sources`` (in order) into one new bag ``dest``; returns the count.

    Connections are created in the order of their first appearance in the sources, so parts
    written with the same connection list give the same list.
    """
    from rosbags.rosbag2 import Reader

    count = 0
    with OutputBag(dest, storage, typestore) as out:
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
