/* Internal declarations of the kafka layer (not installed). */
#ifndef RILL_KAFKA_INT_H
#define RILL_KAFKA_INT_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include <rill/common.h>

/*
 * Check a topic name against Kafka's rules (1..249 chars of [A-Za-z0-9._-],
 * not "." or ".."). Returns RILL_OK or RILL_EINVAL with the reason in errstr.
 */
rill_err_t rill__topic_name_check(const char *topic, char *errstr, size_t errstr_size);

/*
 * Apply a NULL-terminated "key", "value", ... array to conf. Returns RILL_OK
 * or RILL_EKAFKA with librdkafka's message (which names the property).
 */
rill_err_t rill__conf_apply(rd_kafka_conf_t *conf, const char *const *kv, char *errstr,
                            size_t errstr_size);

/* rd_kafka_conf_set() that reports failure as RILL_EKAFKA with the text. */
rill_err_t rill__conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                          size_t errstr_size);

#endif /* RILL_KAFKA_INT_H */
