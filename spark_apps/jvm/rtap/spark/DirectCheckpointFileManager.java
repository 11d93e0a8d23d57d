package rtap.spark;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.util.EnumSet;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.CommonPathCapabilities;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.Options;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.execution.streaming.checkpointing.CheckpointFileManager;
import org.apache.spark.sql.execution.streaming.checkpointing.FileContextBasedCheckpointFileManager;

/**
 * The checkpoint file manager of the stream (offset and commit logs, the file sinks'
 * {@code _spark_metadata} logs, the state store's changelogs and snapshots): on an object store
 * whose output streams can be aborted (S3A), a file is written straight to its final name and
 * becomes visible whole when its stream closes (one PUT), or never, if the writer is cancelled or
 * dies. Spark's default manager writes a temporary file and renames it, which S3A does as a copy
 * and a delete of the object after a HEAD of each name, for every entry, several entries per
 * micro-batch (bench/limits.md, latency: the offset log's write went from ~30 ms to ~14 ms).
 *
 * <p>Spark's own {@code AbortableStreamBasedCheckpointFileManager} (spark-hadoop-cloud) does the
 * same, but its {@code close()} logs and swallows every failure, the failed upload of an offset
 * log entry included, and its refusal to replace an existing entry: the batch would go on as if
 * the entry were written. Here a failure to close is raised to the writer, as the rename's would
 * be. Where the file system cannot abort a stream (a local path in the tests), the rename is
 * kept.
 *
 * <p>Without the rename, replacing an existing entry is refused by a check of the name just
 * before the upload, not atomically. Two drivers never write one checkpoint: the platform's
 * single-writer lease (include/supervision/lease.py) stops the second before its first batch.
 */
public final class DirectCheckpointFileManager extends FileContextBasedCheckpointFileManager {

  private final boolean direct;

  public DirectCheckpointFileManager(Path path, Configuration hadoopConf) throws IOException {
    super(path, hadoopConf);
    this.direct = fc().hasPathCapability(path, CommonPathCapabilities.ABORTABLE_STREAM);
  }

  /** Whether entries are written in place (an object store) rather than renamed. */
  public boolean writesInPlace() {
    return direct;
  }

  @Override
  public CheckpointFileManager.CancellableFSDataOutputStream createAtomic(
      Path path, boolean overwriteIfPossible) {
    if (!direct) {
      return super.createAtomic(path, overwriteIfPossible);
    }
    EnumSet<CreateFlag> flags =
        overwriteIfPossible
            ? EnumSet.of(CreateFlag.CREATE, CreateFlag.OVERWRITE)
            : EnumSet.of(CreateFlag.CREATE);
    try {
      return new InPlace(
          fc().create(path, flags, Options.CreateOpts.createParent()), path, overwriteIfPossible);
    } catch (IOException e) {
      throw new java.io.UncheckedIOException("cannot create checkpoint file " + path, e);
    }
  }

  /** A stream whose object appears on {@link #close()} and never after {@link #cancel()}. */
  private final class InPlace extends CheckpointFileManager.CancellableFSDataOutputStream {
    private final FSDataOutputStream out;
    private final Path path;
    private final boolean overwrite;
    private boolean terminated;

    InPlace(FSDataOutputStream out, Path path, boolean overwrite) {
      super(out);
      this.out = out;
      this.path = path;
      this.overwrite = overwrite;
    }

    @Override
    public synchronized void cancel() {
      if (terminated) {
        return;
      }
      terminated = true;
      try {
        out.abort();
        out.close();
      } catch (IOException | RuntimeException e) {
        // Nothing was published: an aborted upload leaves no object behind.
      }
    }

    @Override
    public synchronized void close() throws IOException {
      if (terminated) {
        return;
      }
      terminated = true;
      if (!overwrite && fc().util().exists(path)) {
        out.abort();
        throw new FileAlreadyExistsException(
            path + ": another writer created this checkpoint file first");
      }
      out.close(); // the upload: a failure reaches the caller, and nothing is published
    }
  }
}
