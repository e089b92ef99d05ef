/*
 * Small librdkafka configuration helpers shared by the Kafka layer and the
 * testkit (not installed). Static inline for the same reason as
 * actors/util.h: the testkit is a library of its own.
 */
#ifndef RILL_KCONF_H
#define RILL_KCONF_H

#include <ctype.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "../actors/util.h"

/*
 * Check a topic name against Kafka's rules (1..249 chars of [A-Za-z0-9._-],
 * not "." or ".."). Returns RILL_OK or RILL_EINVAL with the reason in errstr.
 */
static inline rill_err_t rill__topic_name_check(const char *topic, char *errstr, size_t errstr_size)
{
    if (!topic)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "topic name is NULL");
    size_t len = strlen(topic);
    if (len == 0 || len > 249)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "topic name must have 1 to 249 characters, \"%.40s\" has %zu", topic,
                          len);
    if (!strcmp(topic, ".") || !strcmp(topic, ".."))
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "topic name \"%s\" is not allowed",
                          topic);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)topic[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "topic name \"%.60s\" has an invalid character at position %zu "
                              "(allowed: letters, digits, '.', '_', '-')",
                              topic, i);
    }
    return RILL_OK;
}

/* rd_kafka_conf_set() that reports failure as RILL_EKAFKA with the text. */
static inline rill_err_t rill__conf_set(rd_kafka_conf_t *conf, const char *key, const char *value,
                                        char *errstr, size_t errstr_size)
{
    char kerr[512];
    if (!key || !value)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "configuration property %s has a NULL %s", key ? key : "(NULL)",
                          key ? "value" : "name");
    if (rd_kafka_conf_set(conf, key, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "%s", kerr);
    return RILL_OK;
}

/*
 * Apply a NULL-terminated "key", "value", ... array to conf. Returns RILL_OK
 * or RILL_EKAFKA with librdkafka's message (which names the property).
 */
static inline rill_err_t rill__conf_apply(rd_kafka_conf_t *conf, const char *const *kv,
                                          char *errstr, size_t errstr_size)
{
    if (!kv)
        return RILL_OK;
    for (size_t i = 0; kv[i]; i += 2) {
        rill_err_t err = rill__conf_set(conf, kv[i], kv[i + 1], errstr, errstr_size);
        if (err)
            return err;
    }
    return RILL_OK;
}

#endif /* RILL_KCONF_H */
