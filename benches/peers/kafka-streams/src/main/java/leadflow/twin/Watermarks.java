package leadflow.twin;

import java.nio.ByteBuffer;

/**
 * The event-time watermark of one task (leadflow's src/time/watermark.rs): stream time per
 * input (largest {@code occurred_at} seen), watermark = min over the inputs that count of
 * stream time − grace, never moving back. An input without records for {@code idleMs} of wall
 * clock stops holding it back until its records return; while some input that counts has not
 * been seen there is no watermark and nothing is late.
 */
final class Watermarks {
    /** What {@link #observe} found about one record. */
    record Observation(boolean late, Long watermark, long latenessMs, Long watermarkAfter) {}

    private final long graceMs;
    private final long idleMs;
    /** Per input; null before its first record. */
    private final Long[] streamTime;
    /** Wall time of each input's last record, or of creation / restore. */
    private final long[] lastRecord;
    private Long watermark;

    Watermarks(long graceMs, long idleMs, int inputs, long now) {
        this.graceMs = graceMs;
        this.idleMs = idleMs;
        this.streamTime = new Long[inputs];
        this.lastRecord = new long[inputs];
        java.util.Arrays.fill(lastRecord, now);
    }

    Observation observe(int input, long occurredAt, long now) {
        Long before = watermark(now);
        boolean late = before != null && occurredAt < before;
        watermark = before;
        streamTime[input] = streamTime[input] == null ? occurredAt : Math.max(streamTime[input], occurredAt);
        lastRecord[input] = Math.max(lastRecord[input], now);
        watermark = watermark(now);
        long lateness = late ? saturatingSub(before, occurredAt) : 0;
        return new Observation(late, before, lateness, watermark);
    }

    Long watermark(long now) {
        Long candidate = candidate(now);
        if (watermark == null) {
            return candidate;
        }
        return candidate == null ? watermark : Math.max(watermark, candidate);
    }

    Long streamTime(int input) {
        return streamTime[input];
    }

    private boolean idle(int input, long now) {
        return saturatingSub(now, lastRecord[input]) >= idleMs;
    }

    private Long candidate(long now) {
        int n = streamTime.length;
        boolean anyActive = false;
        long lastToIdle = Long.MIN_VALUE;
        for (int i = 0; i < n; i++) {
            anyActive |= !idle(i, now);
            lastToIdle = Math.max(lastToIdle, lastRecord[i]);
        }
        Long min = null;
        for (int i = 0; i < n; i++) {
            boolean counts = anyActive ? !idle(i, now) : lastRecord[i] == lastToIdle;
            if (counts) {
                Long t = streamTime[i];
                if (t == null) {
                    return null;
                }
                min = min == null ? t : Math.min(min, t);
            }
        }
        return min == null ? null : saturatingSub(min, graceMs);
    }

    /** Stream times and the watermark; wall times are not kept (idleness restarts). */
    byte[] toBytes() {
        ByteBuffer b = ByteBuffer.allocate(1 + 9 + 9 * streamTime.length);
        putNullable(b, watermark);
        b.put((byte) streamTime.length);
        for (Long t : streamTime) {
            putNullable(b, t);
        }
        return b.array();
    }

    static Watermarks fromBytes(byte[] bytes, long graceMs, long idleMs, int inputs, long now) {
        Watermarks w = new Watermarks(graceMs, idleMs, inputs, now);
        ByteBuffer b = ByteBuffer.wrap(bytes);
        w.watermark = getNullable(b);
        int stored = b.get();
        for (int i = 0; i < stored; i++) {
            Long t = getNullable(b);
            if (i < inputs) {
                w.streamTime[i] = t;
            }
        }
        return w;
    }

    private static void putNullable(ByteBuffer b, Long v) {
        b.put((byte) (v == null ? 0 : 1));
        b.putLong(v == null ? 0 : v);
    }

    private static Long getNullable(ByteBuffer b) {
        boolean present = b.get() != 0;
        long v = b.getLong();
        return present ? v : null;
    }

    static long saturatingSub(long a, long b) {
        long r = a - b;
        // Overflow iff the operands have different signs and the result's sign differs from a's.
        if (((a ^ b) & (a ^ r)) < 0) {
            return a < 0 ? Long.MIN_VALUE : Long.MAX_VALUE;
        }
        return r;
    }
}
