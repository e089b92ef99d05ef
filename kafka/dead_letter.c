/*
 * Dead letters: where a consumer sends a record that exhausted its
 * redeliveries or its failures, or that processing rejected
 * (rill.dead.letter.topic), through a producer actor, with
 * headers naming where it came from; and the configuration of the
 * producer a consumer starts for that itself.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_int.h"

/* ------------------------------------------------------------------ */
/* The producer's configuration                                        */
/* ------------------------------------------------------------------ */

/*
 * The properties librdkafka marks consumer-only: "C" in the C/P column of
 * the table rd_kafka_conf_properties_show() prints, read from there so
 * that the list is that of the librdkafka in use, not one written down
 * here for some version. Parsed once per system (an attachment).
 */
typedef struct consumer_only {
    char **names;
    size_t n;
} consumer_only_t;

static const char consumer_only_key = 0;

static void consumer_only_destroy(void *ptr)
{
    consumer_only_t *co = ptr;
    for (size_t i = 0; i < co->n; i++)
        free(co->names[i]);
    free(co->names);
    free(co);
}

/* The text between from and to without the spaces around it, in place. */
static char *trim_field(char *from, char *to)
{
    while (from < to && *from == ' ')
        from++;
    while (to > from && to[-1] == ' ')
        to--;
    *to = '\0';
    return from;
}

static void *consumer_only_create(char *errstr, size_t errstr_size)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    consumer_only_t *co = calloc(1, sizeof(*co));
    if (!f || !co) {
        if (f)
            fclose(f);
        free(text);
        free(co);
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    rd_kafka_conf_properties_show(f);
    fclose(f);
    /* Rows are "name | C/P | range | default | importance | description";
     * the header row ("C/P") and the rule row ("-----") are not "C". */
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *bar1 = strchr(line, '|');
        char *bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
        if (!bar2)
            continue;
        const char *cp = trim_field(bar1 + 1, bar2);
        const char *name = trim_field(line, bar1);
        if (strcmp(cp, "C") || !*name)
            continue;
        char **v = realloc(co->names, (co->n + 1) * sizeof(*v));
        char *n = v ? strdup(name) : NULL;
        if (v)
            co->names = v;
        if (!n) {
            free(text);
            consumer_only_destroy(co);
            rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
            return NULL;
        }
        co->names[co->n++] = n;
    }
    free(text);
    return co;
}

/* 1 if librdkafka marks `key` consumer-only. Without the table (out of
 * memory) nothing is: a consumer property on a producer only costs a
 * warning from librdkafka, a missing connection property costs the
 * connection. */
static int consumer_only(rill_system_t *sys, const char *key)
{
    const consumer_only_t *co = rill__system_attachment(
        sys, &consumer_only_key, consumer_only_create, consumer_only_destroy, NULL, 0);
    for (size_t i = 0; co && i < co->n; i++)
        if (!strcmp(co->names[i], key))
            return 1;
    return 0;
}

/*
 * The configuration of the dead-letter producer the consumer starts: every
 * client property the application set on the consumer (in the order set,
 * with the value it has now) that is not consumer-only, so that it
 * connects as the consumer does, whatever the security setup (TLS, SASL,
 * OAuth, Kerberos) and tuning. Not transactional.id: the producer is not
 * transactional, and sharing the id of the application's own producer
 * would fence one of them.
 */
static rill_err_t own_producer_conf(rill_system_t *sys, const rill_consumer_conf_t *c,
                                    rill_producer_conf_t *pc, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < c->n_client_keys; i++) {
        const char *key = c->client_keys[i];
        if (!strcmp(key, "transactional.id") || consumer_only(sys, key))
            continue;
        size_t size = 0;
        if (rd_kafka_conf_get(c->kconf, key, NULL, &size) != RD_KAFKA_CONF_OK || !size)
            continue; /* librdkafka keeps no text value for it: nothing to copy */
        char *v = malloc(size);
        if (!v)
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        rill_err_t err = RILL_OK;
        if (rd_kafka_conf_get(c->kconf, key, v, &size) == RD_KAFKA_CONF_OK)
            err = rill_producer_conf_set(pc, key, v, errstr, errstr_size);
        free(v);
        if (err)
            return err;
    }
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* The route                                                           */
/* ------------------------------------------------------------------ */

rill_err_t rill__dlq_init(rill__dlq_t *d, rill_system_t *sys, const rill_consumer_conf_t *c,
                          char *errstr, size_t errstr_size)
{
    memset(d, 0, sizeof(*d));
    d->own = RILL_AID_NONE;
    d->topic = c->o.dlq_topic;
    d->producer = c->o.dlq_producer;
    if (!d->topic || d->producer)
        return RILL_OK;
    rill_producer_conf_t *pc = rill_producer_conf_new();
    rill_err_t err = pc ? own_producer_conf(sys, c, pc, errstr, errstr_size)
                        : rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    if (err) {
        rill_producer_conf_destroy(pc);
        return err;
    }
    char why[200] = "";
    err = rill_producer_spawn(sys, pc, NULL, &d->own, why, sizeof(why));
    if (err)
        return rill__fail(err, errstr, errstr_size, "the dead-letter producer: %s", why);
    return RILL_OK;
}

/* The producer that takes our dead letters: ours, or the one named. */
static rill_aid_t target(const rill__dlq_t *d, rill_system_t *sys)
{
    if (!rill_aid_is_none(d->own))
        return d->own;
    return d->producer ? rill_lookup(sys, d->producer) : RILL_AID_NONE;
}

int rill__dlq_send(rill__dlq_t *d, rill_system_t *sys, rill_aid_t reply_to,
                   const rd_kafka_message_t *m, uint64_t part_id, const char *why)
{
    rill_aid_t to = target(d, sys);
    if (!d->topic || rill_aid_is_none(to))
        return -1;
    rill__dlq_ref_t *refs = rill__grow(d->refs, &d->cap_refs, d->n_refs, sizeof(*refs), 16);
    if (!refs)
        return -1;
    d->refs = refs;
    rill_produce_t *req =
        rill_produce_new(d->topic, RILL_PARTITION_ANY, m->key, m->key_len, m->payload, m->len);
    if (!req)
        return -1;
    rd_kafka_headers_t *src = NULL;
    if (rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; !rd_kafka_header_get_all(src, i, &name, &val, &len); i++)
            rill_produce_add_header(req, name, val, len);
    }
    char part[16], off[24];
    snprintf(part, sizeof(part), "%d", (int)m->partition);
    snprintf(off, sizeof(off), "%" PRId64, m->offset);
    const char *topic = rd_kafka_topic_name(m->rkt);
    rill_produce_add_header(req, "rill-origin-topic", topic, strlen(topic));
    rill_produce_add_header(req, "rill-origin-partition", part, strlen(part));
    rill_produce_add_header(req, "rill-origin-offset", off, strlen(off));
    rill_produce_add_header(req, "rill-error", why, strlen(why));
    uint64_t seq = ++d->seq;
    rill_produce_set_reply(req, reply_to, seq);
    if (rill_producer_send(sys, to, req) != RILL_OK) {
        rill_produce_free(req);
        return -1;
    }
    d->refs[d->n_refs++] = (rill__dlq_ref_t){.seq = seq, .part_id = part_id, .offset = m->offset};
    return 0;
}

int rill__dlq_answer(rill__dlq_t *d, uint64_t seq, rill__dlq_ref_t *ref)
{
    for (size_t i = 0; i < d->n_refs; i++)
        if (d->refs[i].seq == seq) {
            *ref = d->refs[i];
            d->refs[i] = d->refs[--d->n_refs];
            return 1;
        }
    return 0;
}

void rill__dlq_free(rill__dlq_t *d, rill_system_t *sys)
{
    if (!rill_aid_is_none(d->own))
        rill_stop(sys, d->own); /* it flushes what it holds */
    d->own = RILL_AID_NONE;
    free(d->refs);
    d->refs = NULL;
    d->n_refs = d->cap_refs = 0;
}
