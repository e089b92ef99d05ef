/*
 * The consumer's offset tracker (internal to kafka/, not installed).
 *
 * It knows, per assigned partition, which records went downstream and
 * what became of them, and from that the offset that is safe to commit:
 * never past a record that was not confirmed. It is plain data (offsets,
 * times, topic names) with no librdkafka or actor calls, so it can be
 * tested alone (test/test_kafka_offsets.c); the consumer actor does the
 * polling, committing and seeking around it.
 *
 * Partitions. Each assignment of a partition gets a fresh id, the slot of
 * its entry in a fixed table and a generation that grows with every
 * assignment (id = generation << 16 | slot), so a partition revoked and
 * assigned again has a new id. Elements carry the id; a confirm that names
 * the id of an ended assignment is fenced: rejected and counted, and the
 * newer assignment is untouched.
 *
 * Records. Per partition, a ring of the records emitted and not yet
 * committable, in offset order (gaps allowed: compaction, transaction
 * markers), each confirmed, failed or neither. Confirmed records at the
 * front leave the ring. The committable offset is the first record that
 * was not confirmed, or one past the last one emitted when every record
 * was. A failed record (a "nack": processing gave up on it) is settled but
 * never confirmed: the committable offset stays at it until it is
 * delivered again and confirmed, and a late confirm of it is ignored.
 *
 * Redelivery. A record not settled within a timeout, failed, or wanted
 * again (a retry, a reject) is due for redelivery; rill__tracker_redeliver
 * marks each due record awaiting and the owner seeks the partition back to
 * the lowest: of what comes again only the awaiting records are emitted
 * (rill__tracker_fresh), the later ones keep what became of them, so a
 * redelivery is of those records alone. Attempts are counted per offset.
 * Records on their way to the dead-letter topic are not due. (The older
 * way, rill__tracker_due and rill__tracker_truncate_from, forgets
 * everything after the record, which is then emitted again.)
 *
 * @locality one thread at a time (the consumer actor's); nothing here
 * locks.
 */
#ifndef RILL_KAFKA_OFFSETS_H
#define RILL_KAFKA_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

#include <rill/common.h> /* rill_hist_t */

/* Partition id bits: generation << RILL__PART_ID_SHIFT | slot. */
#define RILL__PART_ID_SHIFT     16
/* The generation of a partition id's value. */
#define RILL__PART_ID_GEN(v)    ((uint64_t)(v) >> RILL__PART_ID_SHIFT)
/* The most partitions a tracker can hold (slots). */
#define RILL__TRACKER_MAX_SLOTS (1u << RILL__PART_ID_SHIFT)

/* The id of one assignment of a partition; 0 is never an id. A struct, so
 * that an id and an offset cannot be swapped silently. */
typedef struct rill__part_id {
    uint64_t v;
} rill__part_id_t;

/* A record emitted and not yet dropped from the ring. */
typedef struct rill__offent {
    int64_t offset;
    int64_t emitted_ms;  /* when it was emitted (or its dead letter failed) */
    int64_t ts_ms;       /* the record's timestamp (ms since the epoch); -1 none */
    uint8_t confirmed;   /* processed: may be committed past */
    uint8_t failed;      /* settled without a confirm: never committed past */
    uint8_t dead_letter; /* on its way to the dead-letter topic: not due */
    uint8_t awaiting;    /* the owner sought back for it: it is to be emitted again */
    uint8_t wanted;      /* asked for again (rill__tracker_want): due at due_ms */
    int64_t due_ms;
} rill__offent_t;

/* Redelivery attempts of one offset. */
typedef struct rill__redeliv {
    int64_t offset;
    uint32_t attempts;
} rill__redeliv_t;

/*
 * One assigned partition. The tracker owns every field except those
 * marked "owner's", which it zeroes on assignment and never reads; read
 * the others, write them only through the functions below.
 */
typedef struct rill__tpart {
    rill__part_id_t id; /* .v == 0: a free slot */
    char *topic;        /* owned copy */
    int32_t partition;
    int64_t committable; /* offset safe to commit; -1 until a record was emitted */
    int64_t committed;   /* last offset committed (or sent to be); -1 none */
    int64_t acked;       /* highest offset a commit of it succeeded with; -1 none */
    /* After a truncation: records of this partition at or after this
     * offset that the owner polled or buffered before its seek back are
     * stale. -1: none. */
    int64_t purge_from;
    const void *handle; /* owner's: e.g. a topic object, for fast lookup */
    int revoking;       /* owner's: being released, emits nothing more */
    /* owner's: held paused until the assigned callback tells its start
     * (RILL_OFFSET_LATER): the assignment that will (NULL: none). */
    void *start_wait;
    /* owner's: records it polled and dropped unemitted (a run ending): the
     * lowest offset of them, where a next run must go on. */
    int dropped;
    int64_t dropped_from;
    /* owner's (rill.commit=transaction): where the partition goes back to
     * on a rewind: the offset the last committed transaction left it at,
     * else the first record this assignment emitted. */
    int txn_has_base;
    int64_t txn_base;

    /* The ring of emitted records, oldest first. */
    rill__offent_t *ring;
    size_t cap, head, count;
    int64_t next_min; /* the lowest offset the next emit may have; -1 any */
    uint32_t unconfirmed, unsettled;

    uint32_t pending; /* entries wanted or awaiting */

    rill__redeliv_t *redeliv; /* offsets redelivered, with attempts */
    size_t n_redeliv, cap_redeliv;
} rill__tpart_t;

/* The assigned partitions of one consumer, and its counts. */
typedef struct rill__tracker {
    rill__tpart_t *parts; /* max_slots entries */
    uint32_t n_slots;     /* slots ever used: [0, n_slots) are scanned */
    uint32_t max_slots;
    uint64_t next_gen;
    uint32_t assigned;    /* partitions assigned now */
    uint32_t unconfirmed; /* emitted, not confirmed (failed ones included) */
    uint32_t unsettled;   /* emitted, neither confirmed nor failed */
    uint64_t confirmed;   /* records confirmed, ever */
    uint64_t fenced;      /* confirms and fails that named an ended assignment */
    /* The wall clock now (ms since the epoch), set by the owner before it
     * hands the tracker a batch of confirms (0: none): every confirm of a
     * record with a timestamp not after it is observed in e2e, from the
     * timestamp to the confirm. Records confirmed together mostly share a
     * latency (ms resolution), so the last one's bucket is kept. */
    int64_t wall_now_ms;
    int64_t e2e_last_ms;
    size_t e2e_last_bucket;
    rill_hist_t e2e;
} rill__tracker_t;

/* What became of an emit, a confirm or a fail. */
typedef enum rill__track_res {
    RILL__TRACK_ACCEPTED = 0, /* done (confirm_upto: at least one record confirmed) */
    RILL__TRACK_DUPLICATE,    /* the record was settled already: nothing changed */
    RILL__TRACK_UNKNOWN,      /* not in the ring: committed past, or truncated */
    RILL__TRACK_FENCED,       /* the id is not (any more) an assignment's */
    RILL__TRACK_ORDER,        /* emit: the offset is below next_min (see emit) */
    RILL__TRACK_NOMEM,        /* emit: out of memory */
} rill__track_res_t;

/* A word for r ("accepted", "fenced", ...), for messages and tests. */
const char *rill__track_res_name(rill__track_res_t r);

/* ---- the tracker and its partitions ---- */

/* An empty tracker for at most max_slots partitions (at most
 * RILL__TRACKER_MAX_SLOTS; the table is allocated now, so that part
 * pointers stay valid while the partition is assigned). 0, or -1 when out
 * of memory or max_slots is out of range. */
int rill__tracker_init(rill__tracker_t *tr, uint32_t max_slots);
/* Remove every partition and free the table (tr may be zeroed). */
void rill__tracker_free(rill__tracker_t *tr);

/* Track a newly assigned partition (the caller makes sure it is not
 * tracked already): a fresh id, nothing emitted. NULL when the table is
 * full or out of memory. */
rill__tpart_t *rill__tracker_assign(rill__tracker_t *tr, const char *topic, int32_t partition);
/* Track p anew in its slot, as if removed and assigned again: a new id
 * (the old one is fenced from now on), nothing emitted, what it had out
 * leaves the counts; its topic, partition and commit figures (committed,
 * acked) stay, the owner's fields are zeroed. */
void rill__tracker_renew(rill__tracker_t *tr, rill__tpart_t *p);
/* The generation the next assignment (or renewal) gets: every id given
 * from now on is of it or a later one (RILL__PART_ID_GEN). */
uint64_t rill__tracker_gen_floor(const rill__tracker_t *tr);
/* The partition with this id; NULL when the id is stale (fenced) or 0. */
rill__tpart_t *rill__tracker_part(rill__tracker_t *tr, rill__part_id_t id);
/* The assigned partition topic/partition, or NULL. */
rill__tpart_t *rill__tracker_find(rill__tracker_t *tr, const char *topic, int32_t partition);
/* Stop tracking p (its assignment ended): what it had out leaves the
 * counts, and its id is fenced from now on. p is invalid afterwards. */
void rill__tracker_remove(rill__tracker_t *tr, rill__tpart_t *p);
/* The assigned partition after prev (NULL: the first), or NULL at the end.
 * Removing prev while iterating is fine. */
rill__tpart_t *rill__tracker_next(rill__tracker_t *tr, const rill__tpart_t *prev);

/* ---- records ---- */

/*
 * A record of partition id at `offset` went downstream at now_ms. Offsets
 * of a partition must increase from one emit to the next, and after a
 * truncation start at or above where it truncated (ORDER otherwise: such
 * an offset is a record the ring has, or had and saw confirmed), except
 * for a record awaiting its redelivery (rill__tracker_redeliver): it is
 * out again, not settled, and nothing else changes.
 * ACCEPTED, FENCED (not counted), ORDER or NOMEM; only ACCEPTED tracks it.
 */
rill__track_res_t rill__tracker_emit(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                     int64_t now_ms);
/* The same, for a record with timestamp ts_ms (ms since the epoch; -1:
 * none), kept for the end-to-end latency of its confirm. */
rill__track_res_t rill__tracker_emit_ts(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                        int64_t now_ms, int64_t ts_ms);

/* The record at `offset` was processed. ACCEPTED, DUPLICATE (confirmed or
 * failed already), UNKNOWN or FENCED (counted). */
rill__track_res_t rill__tracker_confirm(rill__tracker_t *tr, rill__part_id_t id, int64_t offset);

/* Every record of the partition up to and including `offset` was
 * processed; failed ones stay failed. *n (if n) gets how many records were
 * newly confirmed. ACCEPTED (n > 0), DUPLICATE (records in range, all
 * settled already), UNKNOWN (none in range) or FENCED (counted). */
rill__track_res_t rill__tracker_confirm_upto(rill__tracker_t *tr, rill__part_id_t id,
                                             int64_t offset, size_t *n);

/* The record at `offset` was settled without being processed: it no
 * longer counts as unsettled, is due for redelivery at once, and the
 * committable offset never passes it. ACCEPTED, DUPLICATE (settled
 * already), UNKNOWN or FENCED (counted). */
rill__track_res_t rill__tracker_fail(rill__tracker_t *tr, rill__part_id_t id, int64_t offset);

/* Records of p emitted and not confirmed (failed ones included), and of
 * those, the ones not failed either. */
uint32_t rill__tracker_part_unconfirmed(const rill__tpart_t *p);
uint32_t rill__tracker_part_unsettled(const rill__tpart_t *p);

/* ---- commits ---- */

/* The offset to commit for p if its committable offset moved since it was
 * last marked committed, else -1. */
int64_t rill__tracker_to_commit(const rill__tpart_t *p);
/* `offset` was committed for p (or sent to be). */
void rill__tracker_mark_committed(rill__tpart_t *p, int64_t offset);
/* A commit of `offset` for p failed: commit it again next time (unless a
 * later offset was marked committed since). */
void rill__tracker_commit_failed(rill__tpart_t *p, int64_t offset);
/* A commit of offset succeeded. One of a lower offset than a success seen
 * before completed later (an older request retried after an outage), so
 * the broker may hold the lower one now: the partition is committed again
 * at the next commit. */
void rill__tracker_commit_acked(rill__tpart_t *p, int64_t offset);
/* Forget what was committed for p, so that the next commit sends its
 * committable offset again whatever happened to the last one. */
void rill__tracker_commit_again(rill__tpart_t *p);

/* ---- redelivery ---- */

/*
 * The oldest record of p due for redelivery at now_ms: failed, or not
 * settled for timeout_ms (0: no timeout, only failed records are due).
 * Records on their way to the dead-letter topic are not due, and nothing
 * after one is either. 1 with *offset set, or 0.
 */
int rill__tracker_due(const rill__tpart_t *p, int64_t now_ms, uint32_t timeout_ms, int64_t *offset);

/* How many times `offset` was counted as redelivered (0 if never, or if it
 * was forgotten below the committable offset). */
uint32_t rill__tracker_attempts(const rill__tpart_t *p, int64_t offset);
/* Count one more redelivery of `offset`: the new count, or 0 when out of
 * memory. */
uint32_t rill__tracker_count_attempt(rill__tpart_t *p, int64_t offset);
/* Forget the attempts of offsets below `offset` (they were committed past;
 * confirms do this by themselves with the committable offset). */
void rill__tracker_forget_attempts_below(rill__tpart_t *p, int64_t offset);

/*
 * The owner seeks p back to `offset`: forget the records emitted from
 * there (they leave the counts and will be emitted again), and mark the
 * owner's polled and buffered records from there stale (purge_from). An
 * offset below the committable one truncates from the committable offset
 * (what lies before it was confirmed); records below it that come again
 * are refused by emit (ORDER).
 */
void rill__tracker_truncate_from(rill__tracker_t *tr, rill__tpart_t *p, int64_t offset);

/* A record polled from p's partition after a truncation: 0 if it is stale
 * (below purge_from: fetched before the seek took effect), 1 if it is
 * current; the first one at or after purge_from shows the seek took effect
 * and ends the purge. */
int rill__tracker_polled(rill__tpart_t *p, int64_t offset);
/* A record the owner buffered (polled, not emitted): 1 if it is stale
 * because the ring was truncated before it. */
int rill__tracker_buffered_stale(const rill__tpart_t *p, int64_t offset);

/*
 * Redelivery of single records (what the consumer does; truncate_from is
 * the older way, which forgets everything after the record). Records of
 * p due at now_ms: wanted ones whose time came, failed ones and ones not
 * settled for timeout_ms (both only with timeout_ms > 0), and awaiting
 * ones whose seek back did not bring them in RILL__RESEEK_MS. Each is
 * marked awaiting (failed, if it was not settled), counted as a
 * redelivery attempt unless it was wanted or awaiting already, and the
 * owner seeks back to the lowest of them (*from; purge_from is set).
 * Records after them are kept as they are: when they come again, the
 * owner drops them (rill__tracker_fresh), and only the awaiting ones are
 * emitted again (emit accepts them below next_min). Returns how many
 * records were marked.
 */
#define RILL__RESEEK_MS 2000
uint32_t rill__tracker_redeliver(rill__tracker_t *tr, rill__tpart_t *p, int64_t now_ms,
                                 uint32_t timeout_ms, int64_t *from);
/* A record of p polled (after rill__tracker_polled): 1 if it is to be
 * emitted (never emitted in this assignment, or awaiting its
 * redelivery), 0 if it is confirmed, out or committed past already. */
int rill__tracker_fresh(const rill__tpart_t *p, int64_t offset);
/* The record at `offset`, emitted and not confirmed, is asked for again
 * at due_ms (a retry, or a reject that must reach the dead letters): it
 * counts as failed (never committed past) and is due then, with or
 * without a timeout. ACCEPTED, UNKNOWN (not in the ring, or confirmed) or
 * FENCED. */
rill__track_res_t rill__tracker_want(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                     int64_t due_ms);

/* The offsets of p's records that are confirmed and not committable yet
 * (after the first record not confirmed), ascending, into a new array
 * (*out, the caller frees it; NULL when there are none). How many, or 0
 * (none, or out of memory). */
size_t rill__tracker_confirmed_ahead(const rill__tpart_t *p, int64_t **out);

/* Mark the emitted record at `offset` as on its way to the dead-letter
 * topic (on = 1: not due for redelivery) or back from a failed attempt
 * (on = 0); either way its timeout starts again at now_ms. 0, or -1 when
 * it is not in the ring. */
int rill__tracker_dead_letter(rill__tpart_t *p, int64_t offset, int on, int64_t now_ms);

#endif /* RILL_KAFKA_OFFSETS_H */
