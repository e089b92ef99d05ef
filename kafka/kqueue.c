/* A librdkafka queue as a wakeup source of an actor (see kafka_int.h). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include <rill/kafka.h>

#include "../actors/seam.h"
#include "kafka_int.h"

static void kq_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    rill__kq_t *kq = w->data;
    char sink[256];
    /* Drain the pipe: librdkafka writes again only after the queue has
     * been emptied and fills up again. */
    while (read(kq->pipe_r, sink, sizeof(sink)) > 0)
        ;
    if (!kq->pending) {
        kq->pending = 1;
        rill_msg_t m = {.type = kq->signal_type};
        rill_signal(kq->sys, kq->actor, &m);
    }
}

rill_err_t rill__kq_start(rill__kq_t *kq, struct rill_ctx *ctx, rd_kafka_queue_t *q,
                          uint32_t signal_type)
{
    memset(kq, 0, sizeof(*kq));
    kq->pipe_r = kq->pipe_w = -1;
    int fds[2];
    ev_io *io = malloc(sizeof(*io));
    if (!io || pipe2(fds, O_NONBLOCK | O_CLOEXEC)) {
        free(io);
        return RILL_EIO;
    }
    kq->q = q;
    kq->pipe_r = fds[0];
    kq->pipe_w = fds[1];
    kq->sys = rill_ctx_system(ctx);
    kq->actor = rill_self(ctx);
    kq->signal_type = signal_type;
    kq->loop = rill__ctx_loop(ctx);
    static const char one = 1;
    rd_kafka_queue_io_event_enable(q, kq->pipe_w, &one, 1);
    ev_io_init(io, kq_io_cb, kq->pipe_r, EV_READ);
    io->data = kq;
    ev_io_start(kq->loop, io);
    kq->io = io;
    return RILL_OK;
}

void rill__kq_woken(rill__kq_t *kq)
{
    kq->pending = 0;
}

void rill__kq_stop(rill__kq_t *kq)
{
    if (!kq->io)
        return;
    ev_io_stop(kq->loop, kq->io);
    free(kq->io);
    kq->io = NULL;
    rd_kafka_queue_io_event_enable(kq->q, -1, NULL, 0);
    close(kq->pipe_r);
    close(kq->pipe_w);
    kq->pipe_r = kq->pipe_w = -1;
}
