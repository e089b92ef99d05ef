/*
 * The one table of rill.* properties (kafka/conf.c) against what users
 * read and what the setters do, without a broker:
 *   - include/rill/kafka.h lists every property of the table, in the
 *     right setter's list, with the table's default, and nothing else;
 *   - every default of the table is accepted by its setter, and so are
 *     the ends of every range, while the values just outside are refused
 *     with a sentence naming the property;
 *   - a property of the other kind of client is refused with a sentence
 *     saying whose it is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/rtest.h"

#include "kafka/kafka_int.h"

/* The text of include/rill/kafka.h (found from this file's path). */
static char *read_header(void)
{
    char path[1024];
    const char *slash = strrchr(__FILE__, '/');
    int n = slash ? (int)(slash - __FILE__) : 1;
    snprintf(path, sizeof(path), "%.*s/../include/rill/kafka.h", n, slash ? __FILE__ : ".");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    static char buf[1 << 17];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *copy = strdup(buf);
    cr_assert_not_null(copy);
    return copy;
}

/* The part of the header documenting `setter` (from its doc comment's
 * first line to the setter's declaration). */
static char *section(const char *text, const char *first_line, const char *setter)
{
    const char *a = strstr(text, first_line);
    cr_assert_not_null(a, "kafka.h has no \"%s\"", first_line);
    const char *b = strstr(a, setter);
    cr_assert_not_null(b, "kafka.h has no %s after \"%s\"", setter, first_line);
    return strndup(a, (size_t)(b - a));
}

Test(kafka_conf, the_header_lists_the_table)
{
    char *h = read_header();
    char *cons = section(h, "Set a property. Keys starting with \"rill.\" are rill's",
                         "rill_consumer_conf_set(");
    char *prod = section(h, "Set a property. rill's own", "rill_producer_conf_set(");
    size_t n;
    const rill__kprop_t *t = rill__kprops(&n);
    cr_assert_gt(n, 10);
    for (size_t i = 0; i < n; i++) {
        const char *list = t[i].scope & RILL__KP_CONSUMER ? cons : prod;
        const char *other = t[i].scope & RILL__KP_CONSUMER ? prod : cons;
        char item[96];
        snprintf(item, sizeof(item), " - %s:", t[i].name);
        const char *at = strstr(list, item);
        cr_assert_not_null(at, "%s is not in the header's list", t[i].name);
        cr_assert_null(strstr(other, item), "%s is in the other client's list", t[i].name);
        /* Its default, in brackets, before the next item. */
        const char *next = strstr(at + 1, " - rill.");
        const char *def = strchr(at, '[');
        cr_assert(def && (!next || def < next), "%s: no [default] in the header", t[i].name);
        char want[64];
        snprintf(want, sizeof(want), "[%s]", t[i].def ? t[i].def : "none");
        cr_assert_eq(strncmp(def, want, strlen(want)), 0, "%s: the header says %.20s, the table %s",
                     t[i].name, def, want);
    }
    /* Nothing listed that the table does not have. */
    for (const char *list = cons, *end = NULL; list; list = list == cons ? prod : NULL) {
        for (const char *p = strstr(list, " - rill."); p; p = strstr(p + 1, " - rill.")) {
            end = strchr(p + 3, ':');
            cr_assert_not_null(end);
            char name[96];
            snprintf(name, sizeof(name), "%.*s", (int)(end - (p + 3)), p + 3);
            int found = 0;
            for (size_t i = 0; i < n && !found; i++)
                found = !strcmp(t[i].name, name);
            cr_assert(found, "the header lists %s, which the table does not have", name);
        }
    }
    free(cons);
    free(prod);
    free(h);
}

Test(kafka_conf, defaults_and_ranges_follow_the_table)
{
    size_t n;
    const rill__kprop_t *t = rill__kprops(&n);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    rill_producer_conf_t *p = rill_producer_conf_new();
    cr_assert(c && p);
    for (size_t i = 0; i < n; i++) {
        int consumer = t[i].scope & RILL__KP_CONSUMER;
        char err[256] = "";
#define SET(v)                                                                                     \
    (consumer ? rill_consumer_conf_set(c, t[i].name, (v), err, sizeof(err))                        \
              : rill_producer_conf_set(p, t[i].name, (v), err, sizeof(err)))
        if (t[i].def)
            cr_assert_eq(SET(t[i].def), RILL_OK, "%s = its default %s: %s", t[i].name, t[i].def,
                         err);
        if (t[i].type != RILL__KP_U32)
            continue;
        char v[32];
        snprintf(v, sizeof(v), "%u", t[i].min);
        cr_assert_eq(SET(v), RILL_OK, "%s = %s (its minimum): %s", t[i].name, v, err);
        snprintf(v, sizeof(v), "%u", t[i].max);
        cr_assert_eq(SET(v), RILL_OK, "%s = %s (its maximum): %s", t[i].name, v, err);
        if (t[i].min > 0) {
            snprintf(v, sizeof(v), "%u", t[i].min - 1);
            err[0] = '\0';
            cr_assert_eq(SET(v), RILL_EINVAL, "%s = %s was accepted", t[i].name, v);
            cr_assert_not_null(strstr(err, t[i].name), "errstr: %s", err);
        }
        snprintf(v, sizeof(v), "%llu", (unsigned long long)t[i].max + 1);
        err[0] = '\0';
        cr_assert_eq(SET(v), RILL_EINVAL, "%s = %s was accepted", t[i].name, v);
        cr_assert_not_null(strstr(err, t[i].name), "errstr: %s", err);
#undef SET
    }
    rill_consumer_conf_destroy(c);
    rill_producer_conf_destroy(p);
}

Test(kafka_conf, the_other_clients_properties_are_refused)
{
    size_t n;
    const rill__kprop_t *t = rill__kprops(&n);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    rill_producer_conf_t *p = rill_producer_conf_new();
    cr_assert(c && p);
    for (size_t i = 0; i < n; i++) {
        char err[256] = "";
        const char *v = t[i].def ? t[i].def : "x";
        if (t[i].scope & RILL__KP_CONSUMER) {
            cr_assert_eq(rill_producer_conf_set(p, t[i].name, v, err, sizeof(err)), RILL_EINVAL,
                         "a producer took %s", t[i].name);
            cr_assert_not_null(strstr(err, "consumer property"), "errstr: %s", err);
        } else {
            cr_assert_eq(rill_consumer_conf_set(c, t[i].name, v, err, sizeof(err)), RILL_EINVAL,
                         "a consumer took %s", t[i].name);
            cr_assert_not_null(strstr(err, "producer property"), "errstr: %s", err);
        }
    }
    rill_consumer_conf_destroy(c);
    rill_producer_conf_destroy(p);
}

/* The value of librdkafka property key in kc ("" if it has none). */
static const char *kconf_get(rd_kafka_conf_t *kc, const char *key)
{
    static char v[128];
    size_t sz = sizeof(v);
    if (rd_kafka_conf_get(kc, key, v, &sz) != RD_KAFKA_CONF_OK)
        v[0] = '\0';
    return v;
}

/* rill's prefetch defaults: queued.max.messages.kbytes always, and
 * fetch.queue.backoff.ms where the librdkafka running has it (>= 2.2.0,
 * where it replaces 2.0.2's fixed second); what the application set is
 * kept. */
Test(kafka_conf, fetch_defaults_follow_the_librdkafka_running)
{
    char err[256] = "";
    int has_backoff = rill__has_fetch_queue_backoff();
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    cr_assert_not_null(c);
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    cr_assert_eq(rill__consumer_fetch_defaults(c, kc, err, sizeof(err)), RILL_OK, "%s", err);
    /* 2 MiB where the backoff makes a small prefetch free, 8 MiB before. */
    cr_assert_str_eq(kconf_get(kc, "queued.max.messages.kbytes"), has_backoff ? "2048" : "8192",
                     "librdkafka %s", rd_kafka_version_str());
    /* librdkafka's own default is left alone. */
    cr_assert_str_eq(kconf_get(kc, "queued.min.messages"), "100000");
    if (has_backoff)
        cr_assert_str_eq(kconf_get(kc, "fetch.queue.backoff.ms"), "1", "librdkafka %s",
                         rd_kafka_version_str());
    else
        cr_assert_str_eq(kconf_get(kc, "fetch.queue.backoff.ms"), "", "librdkafka %s",
                         rd_kafka_version_str());
    rd_kafka_conf_destroy(kc);

    /* Set by the application: kept. */
    cr_assert_eq(rill_consumer_conf_set(c, "queued.max.messages.kbytes", "1024", err, sizeof(err)),
                 RILL_OK, "%s", err);
    if (has_backoff)
        cr_assert_eq(rill_consumer_conf_set(c, "fetch.queue.backoff.ms", "250", err, sizeof(err)),
                     RILL_OK, "%s", err);
    else /* 2.0.2 does not know the property: refused with librdkafka's words */
        cr_assert_eq(rill_consumer_conf_set(c, "fetch.queue.backoff.ms", "250", err, sizeof(err)),
                     RILL_EKAFKA);
    kc = rd_kafka_conf_dup(c->kconf);
    cr_assert_eq(rill__consumer_fetch_defaults(c, kc, err, sizeof(err)), RILL_OK, "%s", err);
    cr_assert_str_eq(kconf_get(kc, "queued.max.messages.kbytes"), "1024");
    if (has_backoff)
        cr_assert_str_eq(kconf_get(kc, "fetch.queue.backoff.ms"), "250");
    rd_kafka_conf_destroy(kc);
    rill_consumer_conf_destroy(c);
}

/* enable.metrics.push is off unless the application set it (librdkafka
 * 2.5-2.8's destroy can wait a second for its telemetry, kafka/health.c);
 * before 2.5 librdkafka does not know the property and nothing is set. */
Test(kafka_conf, metrics_push_is_off_unless_the_application_sets_it)
{
    char err[256] = "";
    rd_kafka_conf_t *probe = rd_kafka_conf_new();
    int known = rd_kafka_conf_set(probe, "enable.metrics.push", "true", err, sizeof(err)) ==
                RD_KAFKA_CONF_OK;
    rd_kafka_conf_destroy(probe);
    cr_assert_eq(known, rd_kafka_version() >= 0x02050000, "librdkafka %s", rd_kafka_version_str());

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rill__kclient_telemetry_default(kc, 0);
    cr_assert_str_eq(kconf_get(kc, "enable.metrics.push"), known ? "false" : "");
    rd_kafka_conf_destroy(kc);

    /* Set by the application: a consumer's and a producer's are kept. */
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    rill_producer_conf_t *p = rill_producer_conf_new();
    cr_assert_not_null(c);
    cr_assert_not_null(p);
    cr_assert_not(rill__consumer_key_set(c, "enable.metrics.push"));
    cr_assert_not(p->have_metrics_push);
    rill_err_t want = known ? RILL_OK : RILL_EKAFKA; /* unknown: librdkafka's words */
    cr_assert_eq(rill_consumer_conf_set(c, "enable.metrics.push", "true", err, sizeof(err)), want,
                 "%s", err);
    cr_assert_eq(rill_producer_conf_set(p, "enable.metrics.push", "true", err, sizeof(err)), want,
                 "%s", err);
    if (known) {
        cr_assert(rill__consumer_key_set(c, "enable.metrics.push"));
        rill_producer_conf_t *d = rill__producer_conf_dup(p);
        cr_assert_not_null(d);
        cr_assert(d->have_metrics_push, "a copy keeps what the application set");
        kc = rd_kafka_conf_dup(d->kconf);
        rill__kclient_telemetry_default(kc, d->have_metrics_push);
        cr_assert_str_eq(kconf_get(kc, "enable.metrics.push"), "true");
        rd_kafka_conf_destroy(kc);
        rill_producer_conf_destroy(d);
    }
    rill_producer_conf_destroy(p);
    rill_consumer_conf_destroy(c);
}
