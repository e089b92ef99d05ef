/*
 * A consumer that uses a store (rill_consumer_conf_use_store): every
 * partition it is assigned starts from the offset stored with its state,
 * or from its beginning when the store has none, since a partition's state
 * must reflect each of its records. Kafka's committed offsets trail the
 * store's (they serve lag monitoring); consumption never starts from them.
 */
#include "../kafka/kafka_int.h"
#include "changelog.h"
#include "state_int.h"

static int store_assigned(void *opaque, rill_assignment_t *asg,
                          rd_kafka_topic_partition_list_t *parts)
{
    rill_store_t *store = opaque;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t offset = 0;
        if (store->cl) {
            /* Restored from the changelog first, unless the store is
             * current: on the restorer thread, which answers asg with
             * the start; the partition waits paused. */
            rill_err_t err = rill__restorer_submit(store, asg, tp->topic, tp->partition);
            if (err) {
                rill_log(RILL_LOG_ERR, "state.store", "store %s: cannot restore %s [%d]: %s",
                         rill_store_name(store), tp->topic, (int)tp->partition, rill_err2str(err));
                return -1;
            }
            tp->offset = RILL_OFFSET_LATER;
            continue;
        }
        rill_err_t err = rill_store_offset(store, tp->topic, tp->partition, &offset);
        if (err == RILL_OK)
            tp->offset = offset;
        else if (err == RILL_ENOENT)
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
        else {
            rill_log(RILL_LOG_ERR, "state.store", "store %s: cannot read the offset of %s [%d]: %s",
                     rill_store_name(store), tp->topic, (int)tp->partition, rill_err2str(err));
            return -1; /* the source fails: starting elsewhere could lose or repeat */
        }
    }
    return 0;
}

rill_err_t rill_consumer_conf_use_store(rill_consumer_conf_t *conf, rill_store_t *store)
{
    if (!conf || !store)
        return RILL_EINVAL;
    if (conf->assigned_cb)
        return RILL_ESTATE;
    rill_err_t err = rill_consumer_conf_set_assigned_cb(conf, store_assigned, store);
    if (err)
        return err;
    if (!conf->o.commit_set)
        conf->o.commit = 1; /* the store is the truth; Kafka's offsets trail it */
    return RILL_OK;
}
