package leadflow.twin;

import java.util.ArrayList;
import java.util.List;

/**
 * Engagement windows of one contact in event time (leadflow's src/enrich/engagement.rs): each
 * engagement's time and type, sorted by time then type; statistics as of an event's time;
 * entries expired at watermark − 7 days.
 */
final class History {
    static final long HOUR_MS = 3_600_000L;
    static final long DAY_MS = 24 * HOUR_MS;
    /** The longest window any statistic looks back. */
    static final long WINDOW_MS = 7 * DAY_MS;
    /** Most engagements kept per contact. */
    static final int MAX_ENTRIES = 2_000;

    record Entry(long at, String type) {
        int compareTo(Entry o) {
            int c = Long.compare(at, o.at);
            return c != 0 ? c : RustStrings.compare(type, o.type);
        }
    }

    /** Engagement statistics at the event's time (the script's {@code lead.engagement}). */
    record Stats(
            long count24h,
            long count7d,
            long pricingViews7d,
            boolean demoRequested,
            String lastType,
            Long lastAt) {}

    final List<Entry> entries;

    History() {
        this(new ArrayList<>());
    }

    History(List<Entry> entries) {
        this.entries = entries;
    }

    /** Inserts one engagement after every entry ≤ it; over the cap the oldest go. */
    void record(long at, String type) {
        Entry entry = new Entry(at, type);
        int lo = 0;
        int hi = entries.size();
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (entries.get(mid).compareTo(entry) <= 0) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        entries.add(lo, entry);
        if (entries.size() > MAX_ENTRIES) {
            entries.subList(0, entries.size() - MAX_ENTRIES).clear();
        }
    }

    Long newest() {
        return entries.isEmpty() ? null : entries.get(entries.size() - 1).at();
    }

    /** Drops entries before {@code cutoff}; whether anything went. */
    boolean expireBefore(long cutoff) {
        int keepFrom = 0;
        while (keepFrom < entries.size() && entries.get(keepFrom).at() < cutoff) {
            keepFrom++;
        }
        entries.subList(0, keepFrom).clear();
        return keepFrom > 0;
    }

    /** Statistics as of event time {@code t} (engagements at or before it). */
    Stats statsAt(long t) {
        int upto = 0;
        while (upto < entries.size() && entries.get(upto).at() <= t) {
            upto++;
        }
        long day = 0;
        long week = 0;
        long pricing = 0;
        boolean demo = false;
        for (int i = 0; i < upto; i++) {
            Entry e = entries.get(i);
            if (e.at() > t - DAY_MS) {
                day++;
            }
            if (e.at() > t - WINDOW_MS) {
                week++;
                pricing += e.type().equals("pricing_page_view") ? 1 : 0;
                demo |= e.type().equals("demo_request");
            }
        }
        Entry last = upto > 0 ? entries.get(upto - 1) : null;
        return new Stats(day, week, pricing, demo,
                last == null ? null : last.type(), last == null ? null : last.at());
    }
}
