/*
 * The stage-kind table: every built-in stage kind, one file each in
 * streams/stages/ (as nng keeps one file per protocol over one ops
 * table), and the helpers the kinds share. Each kind is a set of hooks the
 * engine (stage.c) calls on the stage's executor; ownership of every
 * element is stated where it changes hands. The Kafka kinds (the consumer
 * and the producer) live in kafka/.
 *
 * The shape shared by the 1-in 1-out processors: elements that are ready
 * to go wait in an output queue; pump() flushes the queue while there is
 * demand, then asks upstream for as many elements as the queue has room
 * for. Memory per stage is therefore bounded by its queue plus its
 * mailbox, whatever the backlog upstream.
 */
#ifndef RILL_KINDS_H
#define RILL_KINDS_H

#include "stream_int.h"

/* Sources */
extern const rill__kind_t rill__range_kind;  /* range.c: rill_source_range */
extern const rill__kind_t rill__pull_kind;   /* pull.c: rill_source_fn */
extern const rill__kind_t rill__failed_kind; /* failed.c: rill_source_failed */
/* Processors */
extern const rill__kind_t rill__map_kind;          /* map.c: rill_stage_map */
extern const rill__kind_t rill__filter_kind;       /* filter.c: rill_stage_filter */
extern const rill__kind_t rill__flat_map_kind;     /* flat_map.c: rill_stage_flat_map */
extern const rill__kind_t rill__stateful_map_kind; /* flat_map.c: rill_stage_stateful_map */
extern const rill__kind_t rill__map_async_kind;    /* map_async.c: rill_stage_map_async */
extern const rill__kind_t rill__batch_kind;        /* batch.c: rill_stage_batch */
extern const rill__kind_t rill__buffer_kind;       /* buffer.c: rill_stage_buffer */
extern const rill__kind_t rill__conflate_kind;     /* conflate.c: rill_stage_conflate */
extern const rill__kind_t rill__conflate_key_kind; /* conflate_key.c: rill_stage_conflate_by_key */
extern const rill__kind_t rill__throttle_kind;     /* throttle.c: rill_stage_throttle */
/* Fan-out and fan-in */
extern const rill__kind_t rill__broadcast_kind; /* broadcast.c: rill_stage_broadcast */
extern const rill__kind_t rill__merge_kind;     /* merge.c: rill_stage_merge */
extern const rill__kind_t rill__partition_kind; /* partition.c: rill_stage_partition_by_key */
/* Sinks */
extern const rill__kind_t rill__sink_kind; /* sink.c: rill_sink_foreach/ignore/collect */

/* Where a function hands out outputs with rill_emit() (flat_map.c): they
 * wait in q until the function returned, each carrying a reference of
 * origin. Other layers' stages with functions that emit (state/) make one
 * the same way. */
struct rill_emitter {
    rill__stage_t *st;
    rill__equeue_t *q;
    rill_origin_t *origin; /* the input's (NULL for outputs made at the end) */
    uint32_t emitted;
    rill_err_t err; /* the first refusal (out of memory) */
};
/* Outputs emitted since `mark` (a queue count) go, released: the call
 * that made them failed (flat_map.c). */
void rill__equeue_drop_since(rill__equeue_t *q, size_t mark);

/* Elements a source emits per turn before yielding. */
#define RILL__PUMP_BUDGET 256

/* A kind's constructor makes its spec with rill__stage_spec_new
 * (stream_int.h). */
/* Flush q to output 0 while it has demand. */
static inline void rill__equeue_flush_out0(rill__stage_t *st, rill__equeue_t *q)
{
    rill_elem_t e;
    while (q->count && rill__stage_can_emit(st, 0) && rill__equeue_pop(q, &e))
        rill__stage_emit(st, 0, &e);
}
/* Shared end of a queue-backed processor: fail with upstream's error, or
 * note that upstream completed (equeue.c). */
void rill__queue_stage_end(rill__stage_t *st, int *upstream_done, rill_err_t code,
                           const char *text);

#endif /* RILL_KINDS_H */
