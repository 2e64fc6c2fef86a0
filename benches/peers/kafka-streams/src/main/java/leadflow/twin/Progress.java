package leadflow.twin;

import java.util.concurrent.atomic.LongAdder;

/** Input records handled (processed, or dead-lettered at deserialization), for the bench. */
final class Progress {
    private Progress() {}

    static final LongAdder RECORDS = new LongAdder();
}
