/*
 * Where partitions start and end.
 *
 * Ends (rill_consumer_conf_set_end_cb): librdkafka's end-of-partition
 * event comes in order with the partition's records; it is told to the
 * application once every record polled before it went out of the source's
 * buffer (emitted, or dropped as not to be emitted): the number buffered
 * when it came is counted down by what the pump takes (conservatively: a
 * record filtered out of the buffer is not counted, so the end may be told
 * a little later, never earlier); an empty buffer tells every end due.
 *
 * Starts the assigned callback tells later (RILL_OFFSET_LATER, see
 * rill_assigned_fn in kafka.h): a partition whose start takes long to find
 * (a state restored from a changelog first) is assigned and held paused,
 * and the source's executor goes on with the others; the answer comes
 * from any thread through a rill_assignment_t, one per call of the
 * callback, as a control signal (K_START) to the source.
 *
 * A rill_assignment_t is shared: the source holds a reference while some
 * partition waits under it, whoever answers holds one too. Its lock
 * orders answers against the end of the run: an answer is signalled
 * under the lock while the run is on (alive), and the run's end clears
 * alive under it, so no answer reaches a system after its source ended.
 * The source's tracker says which assignment each partition waits under
 * (start_wait): an answer for a partition revoked, or revoked and
 * assigned again under a newer call, finds another (or none) and is
 * ignored.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "source.h"

typedef struct later_ent {
    char *topic;
    int32_t partition;
    int waiting; /* under lock: the answer is still wanted */
    int noted;   /* the source's: left LATER, to be held */
    int held;    /* the source's: its tracker part points here */
    int early;   /* under lock: answered while the callback ran, with offset */
    int64_t offset;
} later_ent_t;

struct rill_assignment {
    pthread_mutex_t lock;
    atomic_uint refs;
    rill_system_t *sys;
    rill_aid_t source;
    int alive;   /* under lock: the run is on, answers go to the source */
    int in_call; /* under lock: the callback runs (its LATER ones are not known yet) */
    later_ent_t *v;
    size_t n, cap;
};

/* What a K_START carries: an answer (why NULL) or a failure. */
typedef struct later_answer {
    rill_assignment_t *asg; /* a reference */
    int32_t partition;
    int64_t offset;
    char *why;
    char topic[];
} later_answer_t;

/* ------------------------------------------------------------ the handle */

rill_assignment_t *rill_assignment_retain(rill_assignment_t *asg)
{
    if (asg)
        atomic_fetch_add_explicit(&asg->refs, 1, memory_order_relaxed);
    return asg;
}

void rill_assignment_release(rill_assignment_t *asg)
{
    /* acq_rel: the last one sees every write of the others. */
    if (!asg || atomic_fetch_sub_explicit(&asg->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < asg->n; i++)
        free(asg->v[i].topic);
    free(asg->v);
    pthread_mutex_destroy(&asg->lock);
    free(asg);
}

/* The entry of (topic, partition) (lock held, or the source's thread). */
static later_ent_t *ent_of(rill_assignment_t *asg, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < asg->n; i++)
        if (asg->v[i].partition == partition && !strcmp(asg->v[i].topic, topic))
            return &asg->v[i];
    return NULL;
}

/* A new entry, not waiting (lock held); NULL without memory. */
static later_ent_t *ent_add(rill_assignment_t *asg, const char *topic, int32_t partition)
{
    char *t = strdup(topic);
    later_ent_t *v = t ? rill__grow(asg->v, &asg->cap, asg->n, sizeof(*asg->v), 4) : NULL;
    if (!v) {
        free(t);
        return NULL;
    }
    asg->v = v;
    v[asg->n] = (later_ent_t){.topic = t, .partition = partition};
    return &v[asg->n++];
}

int rill_assignment_waiting(rill_assignment_t *asg, const char *topic, int32_t partition)
{
    if (!asg || !topic)
        return 0;
    pthread_mutex_lock(&asg->lock);
    later_ent_t *e = ent_of(asg, topic, partition);
    int w = asg->alive && (asg->in_call ? !(e && e->early) : e && e->waiting);
    pthread_mutex_unlock(&asg->lock);
    return w;
}

static void answer_free(void *payload)
{
    later_answer_t *a = payload;
    rill_assignment_release(a->asg);
    free(a->why);
    free(a);
}

/* Signal an answer to the source (lock held, alive). */
static rill_err_t send_answer(rill_assignment_t *asg, const char *topic, int32_t partition,
                              int64_t offset, const char *why)
{
    size_t tl = strlen(topic);
    later_answer_t *a = malloc(sizeof(*a) + tl + 1);
    if (!a)
        return RILL_ENOMEM;
    a->asg = rill_assignment_retain(asg);
    a->partition = partition;
    a->offset = offset;
    a->why = why ? strdup(why) : NULL;
    memcpy(a->topic, topic, tl + 1);
    if (why && !a->why) {
        answer_free(a);
        return RILL_ENOMEM;
    }
    rill_msg_t m = {.type = K_START, .payload = a, .dtor = answer_free};
    rill_err_t err = rill_signal(asg->sys, asg->source, &m);
    if (err)
        answer_free(a);
    return err == RILL_ESTOPPED ? RILL_ENOENT : err;
}

rill_err_t rill_assignment_ready(rill_assignment_t *asg, const char *topic, int32_t partition,
                                 int64_t offset)
{
    if (!asg || !topic ||
        (offset < 0 && offset != RILL_OFFSET_BEGINNING && offset != RILL_OFFSET_END))
        return RILL_EINVAL;
    pthread_mutex_lock(&asg->lock);
    later_ent_t *e = ent_of(asg, topic, partition);
    rill_err_t err = RILL_ENOENT;
    if (asg->in_call) {
        /* Before the callback returned (an answer at once, or from a
         * thread that was quick): the start is taken as the callback's. */
        if (!e && !(e = ent_add(asg, topic, partition)))
            err = RILL_ENOMEM;
        else {
            e->early = 1;
            e->offset = offset;
            err = RILL_OK;
        }
    } else if (asg->alive && e && e->waiting) {
        err = send_answer(asg, topic, partition, offset, NULL);
        if (err == RILL_OK)
            e->waiting = 0;
    }
    pthread_mutex_unlock(&asg->lock);
    return err;
}

rill_err_t rill_assignment_fail(rill_assignment_t *asg, const char *why)
{
    if (!asg)
        return RILL_EINVAL;
    pthread_mutex_lock(&asg->lock);
    rill_err_t err =
        asg->alive ? send_answer(asg, "", 0, 0, why ? why : "no reason given") : RILL_ENOENT;
    pthread_mutex_unlock(&asg->lock);
    return err;
}

/* ------------------------------------------------------------ the source */

/* Drop the source's reference of every assignment no partition waits
 * under any more. */
static void prune(ksrc_t *k)
{
    size_t kept = 0;
    for (size_t i = 0; i < k->n_later; i++) {
        rill_assignment_t *asg = k->later[i];
        int used = 0;
        pthread_mutex_lock(&asg->lock);
        /* noted: left LATER, not held yet (perhaps answered already: its
         * answer is on its way and finds it held) */
        for (size_t j = 0; j < asg->n && !used; j++)
            used = asg->v[j].held || asg->v[j].noted || asg->v[j].waiting;
        if (!used)
            asg->alive = 0;
        pthread_mutex_unlock(&asg->lock);
        if (used)
            k->later[kept++] = asg;
        else
            rill_assignment_release(asg);
    }
    k->n_later = kept;
}

int rill__ksrc_ask_assigned(ksrc_t *k, rd_kafka_topic_partition_list_t *parts)
{
    rill_consumer_conf_t *c = k->conf;
    if (!c->assigned_cb)
        return 0;
    rill_assignment_t *asg = calloc(1, sizeof(*asg));
    rill_assignment_t **v =
        asg ? rill__grow(k->later, &k->cap_later, k->n_later, sizeof(*k->later), 4) : NULL;
    if (!v) {
        free(asg);
        rill__stage_fail(k->st, RILL_ENOMEM, "out of memory asking the assigned callback");
        return -1;
    }
    k->later = v;
    pthread_mutex_init(&asg->lock, NULL);
    atomic_init(&asg->refs, 1);
    asg->sys = k->sys;
    asg->source = rill_self(k->st->ctx);
    asg->alive = 1;
    asg->in_call = 1;
    k->later[k->n_later++] = asg;
    if (c->assigned_cb(c->assigned_opaque, asg, parts)) {
        pthread_mutex_lock(&asg->lock);
        asg->in_call = 0;
        pthread_mutex_unlock(&asg->lock);
        prune(k);
        rill__stage_fail(k->st, RILL_ESTATE, "the assigned callback refused the assignment");
        return -1;
    }
    int bad = 0;
    pthread_mutex_lock(&asg->lock); /* the callback may have handed asg on */
    for (int i = 0; i < parts->cnt && !bad; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (tp->offset != RILL_OFFSET_LATER)
            continue;
        later_ent_t *e = ent_of(asg, tp->topic, tp->partition);
        if (e && e->early) {
            tp->offset = e->offset; /* answered already: started like the others */
            continue;
        }
        /* Held paused from the start; a concrete offset, since a logical
         * one (Kafka's committed offset, say) makes librdkafka look it up,
         * and the answer of that lookup could come after our seek and
         * move the partition back there. */
        tp->offset = 0;
        if (!e && !(e = ent_add(asg, tp->topic, tp->partition)))
            bad = 1;
        else
            e->waiting = e->noted = 1;
    }
    asg->in_call = 0;
    pthread_mutex_unlock(&asg->lock);
    if (bad) {
        prune(k);
        rill__stage_fail(k->st, RILL_ENOMEM, "out of memory holding partitions for their start");
        return -1;
    }
    prune(k); /* none left LATER: the call's assignment is over */
    return 0;
}

/* p waits no more (prune() drops the assignment when nothing else does). */
static void forget(rill__tpart_t *p)
{
    rill_assignment_t *asg = p->start_wait;
    if (!asg)
        return;
    p->start_wait = NULL;
    pthread_mutex_lock(&asg->lock);
    later_ent_t *e = ent_of(asg, p->topic, p->partition);
    if (e)
        e->waiting = e->held = 0;
    pthread_mutex_unlock(&asg->lock);
}

void rill__ksrc_later_forget(ksrc_t *k, rill__tpart_t *p)
{
    if (!p->start_wait)
        return;
    forget(p);
    prune(k);
}

void rill__ksrc_later_hold(ksrc_t *k)
{
    rd_kafka_topic_partition_list_t *hold = NULL;
    for (size_t i = 0; i < k->n_later; i++) {
        rill_assignment_t *asg = k->later[i];
        for (size_t j = 0; j < asg->n; j++) {
            later_ent_t *e = &asg->v[j];
            if (!e->noted)
                continue;
            /* Held even if answered already: the answer is on its way. */
            e->noted = 0;
            rill__tpart_t *p = rill__tracker_find(&k->tr, e->topic, e->partition);
            if (!p) { /* not taken (the stage failed) */
                pthread_mutex_lock(&asg->lock);
                e->waiting = 0;
                pthread_mutex_unlock(&asg->lock);
                continue;
            }
            if (p->start_wait != asg)
                forget(p); /* an older call's: this one is newer */
            p->start_wait = asg;
            e->held = 1;
            if (!hold)
                hold = rd_kafka_topic_partition_list_new(4);
            if (hold)
                rd_kafka_topic_partition_list_add(hold, e->topic, e->partition);
        }
    }
    if (hold) {
        rd_kafka_pause_partitions(k->rk, hold);
        rd_kafka_topic_partition_list_destroy(hold);
    }
    prune(k);
}

void rill__ksrc_later_msg(ksrc_t *k, rill_msg_t *msg)
{
    later_answer_t *a = msg->payload;
    if (a->why) {
        rill__stage_fail(k->st, RILL_ESTATE, "the assigned callback failed: %s", a->why);
        return;
    }
    rill__tpart_t *p = rill__tracker_find(&k->tr, a->topic, a->partition);
    if (!p || p->start_wait != a->asg)
        return; /* revoked since, or waiting under a newer call */
    rill__ksrc_later_forget(k, p);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l) {
        rill__stage_fail(k->st, RILL_ENOMEM, "out of memory starting %s [%d]", a->topic,
                         (int)a->partition);
        return;
    }
    rd_kafka_topic_partition_list_add(l, a->topic, a->partition)->offset = a->offset;
    /* Seek first, then fetch: what the partition fetched before (nothing:
     * it was paused since its assignment) is discarded by the seek. */
    rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, l, 0);
    if (e) {
        rill__stage_fail(k->st, RILL_EKAFKA, "seek %s [%d] to its start: %s", a->topic,
                         (int)a->partition, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (!k->paused) {
        rd_kafka_resume_partitions(k->rk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

void rill__ksrc_resume_ready(ksrc_t *k, rd_kafka_topic_partition_list_t *parts)
{
    if (!k->n_later) { /* nothing waits for its start */
        rd_kafka_resume_partitions(k->rk, parts);
        return;
    }
    rd_kafka_topic_partition_list_t *ready = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; ready && i < parts->cnt; i++) {
        rill__tpart_t *p =
            rill__tracker_find(&k->tr, parts->elems[i].topic, parts->elems[i].partition);
        if (!p || !p->start_wait)
            rd_kafka_topic_partition_list_add(ready, parts->elems[i].topic,
                                              parts->elems[i].partition);
    }
    if (ready && ready->cnt)
        rd_kafka_resume_partitions(k->rk, ready);
    if (ready)
        rd_kafka_topic_partition_list_destroy(ready);
}

void rill__ksrc_later_end(ksrc_t *k)
{
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        p->start_wait = NULL;
    for (size_t i = 0; i < k->n_later; i++) {
        rill_assignment_t *asg = k->later[i];
        pthread_mutex_lock(&asg->lock);
        asg->alive = 0;
        for (size_t j = 0; j < asg->n; j++)
            asg->v[j].waiting = asg->v[j].held = asg->v[j].noted = 0;
        pthread_mutex_unlock(&asg->lock);
        rill_assignment_release(asg);
    }
    free(k->later);
    k->later = NULL;
    k->n_later = k->cap_later = 0;
    free(k->ends);
    k->ends = NULL;
    k->n_ends = k->cap_ends = 0;
}

/* ------------------------------------------------------------------ ends */

static void tell_end(ksrc_t *k, const rill__tpart_t *p, int64_t offset)
{
    k->stats.ends++;
    k->conf->end_cb(k->conf->end_opaque, p->topic, p->partition, offset);
}

void rill__ksrc_end_seen(ksrc_t *k, const rd_kafka_message_t *m)
{
    rill__tpart_t *p = k->conf->end_cb && m->rkt
                           ? rill__tracker_find(&k->tr, rd_kafka_topic_name(m->rkt), m->partition)
                           : NULL;
    if (!p || p->revoking || p->start_wait || k->st->finished)
        return;
    if (!k->buf.count) {
        tell_end(k, p, m->offset);
        return;
    }
    struct rill__kend *v = rill__grow(k->ends, &k->cap_ends, k->n_ends, sizeof(*v), 4);
    if (!v)
        return; /* told with a later end (the next one) */
    k->ends = v;
    v[k->n_ends++] = (struct rill__kend){p->id.v, m->offset, k->buf.count};
}

void rill__ksrc_ends_pass(ksrc_t *k, size_t popped)
{
    size_t kept = 0;
    for (size_t i = 0; i < k->n_ends; i++) {
        struct rill__kend e = k->ends[i];
        e.ahead = e.ahead > popped ? e.ahead - popped : 0;
        if (e.ahead && k->buf.count) {
            k->ends[kept++] = e;
            continue;
        }
        rill__tpart_t *p = rill__tracker_part(&k->tr, (rill__part_id_t){e.id});
        if (p && !p->revoking)
            tell_end(k, p, e.offset);
    }
    k->n_ends = kept;
}
