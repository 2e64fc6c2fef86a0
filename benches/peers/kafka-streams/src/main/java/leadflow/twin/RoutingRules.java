package leadflow.twin;

import java.util.ArrayList;
import java.util.List;

import leadflow.twin.ContactState.PreviousDecision;
import leadflow.twin.Events.Account;
import leadflow.twin.Events.Contact;

/**
 * rules/routing.rhai, ported to Java by hand: {@code score(lead)} and {@code route(lead)}, with
 * the same results for every lead (Rhai semantics kept where they matter: {@code ()} compares
 * unequal to every string, strings compare by code point, {@code to_int} truncates).
 *
 * <p>The port is of one version of the script. {@link #PORTED_VERSION} is that script's
 * rule_version (the first 16 hex digits of its SHA-256, as leadflow computes it); the twin
 * refuses to start on any other script, so a changed script cannot silently diverge from its
 * port. After changing rules/routing.rhai, port the change here and update the version.
 */
final class RoutingRules {
    static final String PORTED_VERSION = "b5a8a6a16d15d226";

    private RoutingRules() {}

    /** What the script's {@code lead} holds (docs/contracts.md §4). */
    record Lead(
            Contact contact,
            String eventType,
            String source,
            long occurredAt,
            int score,
            Account account,
            History.Stats engagement,
            PreviousDecision previous) {}

    /** A valid result of {@code route(lead)}. */
    record Decision(String priority, String queue, String owner, List<String> reasons, int score) {}

    /** {@code score(lead)} then {@code route(lead)}; null when route returns {@code ()}. */
    static Decision evaluate(Lead lead) {
        int score = score(lead);
        return route(lead, score);
    }

    // ---------------------------------------------------------------------------------------
    // fn route(lead)

    static Decision route(Lead lead, int score) {
        Account account = lead.account();
        History.Stats activity = lead.engagement();

        // 1. No consent, no known company, no activity this week: no decision.
        if (!lead.contact().consentMarketing() && account == null && activity.count7d() == 0) {
            return null;
        }

        // 2. Existing customers asking for help go to Customer Success (unless a demo).
        String last = activity.lastType();
        if (eq(lead.contact().lifecycleStage(), "customer")
                && (eq(last, "support_ticket") || eq(last, "chat"))
                && !activity.demoRequested()) {
            String what = eq(last, "chat") ? "chat" : "support ticket";
            return decision("P2", "customer-success", null,
                    list("existing customer with a recent " + what), lead.previous(), score);
        }

        String region = lead.contact().region();
        String owner = null;
        boolean enterprise = false;
        if (account != null) {
            if (account.region() != null) {
                region = account.region();
            }
            owner = account.ownerRepId();
            enterprise = isEnterprise(account.tier(), account.employees(), account.annualRevenue());
        }

        // 3. Hot: enterprise accounts and demo requests.
        if (enterprise || activity.demoRequested()) {
            List<String> reasons = new ArrayList<>();
            if (enterprise) {
                reasons.add(enterpriseReason(account));
            }
            if (activity.demoRequested()) {
                reasons.add("demo requested in the last 7 days");
            }
            String queue = enterprise ? enterpriseQueue(region) : regionalQueue(region);
            return decision("P0", queue, owner, reasons, lead.previous(), score);
        }

        // 4. Warm: MQL/SQL with buying intent.
        String stage = lead.contact().lifecycleStage();
        if (eq(stage, "mql") || eq(stage, "sql")) {
            List<String> signals = buyingSignals(activity.pricingViews7d(), activity.count24h(), last);
            if (!signals.isEmpty()) {
                List<String> reasons = list(RustStrings.upper(stage) + " with buying intent");
                reasons.addAll(signals);
                return decision("P1", regionalQueue(region), owner, reasons, lead.previous(), score);
            }
        }

        // 5. Everyone else: inside sales.
        List<String> reasons = list("no enterprise account, demo request or strong buying intent");
        if (stage != null) {
            reasons.add("lifecycle stage " + stage);
        }
        return decision("P2", "inside-sales", owner, reasons, lead.previous(), score);
    }

    // ---------------------------------------------------------------------------------------
    // fn score(lead) and its helpers

    static int score(Lead lead) {
        long points = titlePoints(lead.contact().title()) + stagePoints(lead.contact().lifecycleStage());
        Account account = lead.account();
        if (account != null) {
            points += companyPoints(account.tier(), account.employees(), account.annualRevenue());
        }
        History.Stats activity = lead.engagement();
        if (activity.demoRequested()) {
            points += 15;
        }
        points += Math.min(activity.pricingViews7d() * 5, 10);
        points += Math.min(activity.count7d(), 5);
        return (int) Math.min(points, 100);
    }

    static long titlePoints(String title) {
        if (title == null) {
            return 0;
        }
        String t = RustStrings.lower(title);
        switch (t) {
            case "ceo", "cto", "cfo", "coo", "cmo", "cro", "cio", "founder", "co-founder":
                return 30;
            case "student", "intern":
                return 0;
            default:
                break;
        }
        if (t.startsWith("vp") || t.startsWith("vice president")) {
            return 25;
        }
        if (t.contains("chief")) {
            return 30;
        }
        if (t.startsWith("head") || t.startsWith("director")) {
            return 20;
        }
        if (t.contains("manager")) {
            return 10;
        }
        return 5;
    }

    static long companyPoints(String tier, Integer employees, Double revenue) {
        if (isEnterprise(tier, employees, revenue)) {
            return 25;
        }
        if (eq(tier, "mid_market") || (employees != null && employees >= 200)) {
            return 15;
        }
        return 5;
    }

    static long stagePoints(String stage) {
        if (stage == null) {
            return 0;
        }
        return switch (stage) {
            case "sql", "opportunity" -> 15;
            case "mql" -> 10;
            case "customer" -> 5;
            default -> 0;
        };
    }

    // ---------------------------------------------------------------------------------------
    // Helpers

    static boolean isEnterprise(String tier, Integer employees, Double revenue) {
        return eq(tier, "enterprise")
                || (employees != null && employees >= 1000)
                || (revenue != null && revenue >= 100_000_000.0);
    }

    static String enterpriseReason(Account account) {
        String why = eq(account.tier(), "enterprise") ? "enterprise account " : "enterprise-size account ";
        String size;
        if (account.employees() != null) {
            size = withCommas(account.employees()) + " employees";
        } else if (account.annualRevenue() != null) {
            size = "$" + withCommas(toInt(account.annualRevenue() / 1_000_000.0)) + "M revenue";
        } else {
            size = "size unknown";
        }
        return why + account.name() + " (" + size + ")";
    }

    static List<String> buyingSignals(long pricingViews, long touches24h, String last) {
        List<String> signals = new ArrayList<>();
        if (pricingViews >= 2) {
            signals.add("viewed pricing " + pricingViews + " times this week");
        }
        if (touches24h >= 3) {
            signals.add(touches24h + " touches in the last 24 hours");
        }
        if (eq(last, "form_submit")) {
            signals.add("just submitted a form");
        }
        return signals;
    }

    static String enterpriseQueue(String region) {
        if (region == null) {
            return "enterprise-na";
        }
        if (region.equals("LATAM")) {
            return "enterprise-apac";
        }
        return "enterprise-" + RustStrings.lower(region);
    }

    static String regionalQueue(String region) {
        return region == null ? "inside-sales" : "mid-market-" + RustStrings.lower(region);
    }

    /** The decision map; when the lead moves up from a lower priority, the reasons say so. */
    static Decision decision(String priority, String queue, String owner, List<String> reasons,
            PreviousDecision previous, int score) {
        if (previous != null && RustStrings.compare(previous.priority(), priority) > 0) {
            reasons.add("escalated from " + previous.priority() + " (" + previous.queue() + ")");
        }
        // leadflow's decision validation: () and a blank owner both mean no owner.
        String validOwner = owner == null || RustStrings.trim(owner).isEmpty() ? null : owner;
        return new Decision(priority, queue, validOwner, reasons, score);
    }

    /** 12000 → "12,000" (character by character, as the script does). */
    static String withCommas(long n) {
        String digits = Long.toString(n);
        int len = digits.length();
        if (len <= 3) {
            return digits;
        }
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < len; i++) {
            if (i > 0 && (len - i) % 3 == 0) {
                out.append(',');
            }
            out.append(digits.charAt(i));
        }
        return out.toString();
    }

    /** Rhai's float {@code to_int()}: truncation; out of range is a script error. */
    static long toInt(double x) {
        if (x > (double) Long.MAX_VALUE || x < (double) Long.MIN_VALUE) {
            throw new ArithmeticException("to_int: " + x + " is out of range");
        }
        return (long) x;
    }

    /** Rhai's {@code ==} of a possibly-{@code ()} value with a string. */
    static boolean eq(String value, String literal) {
        return value != null && value.equals(literal);
    }

    static List<String> list(String first) {
        List<String> l = new ArrayList<>();
        l.add(first);
        return l;
    }
}
