/*
 * Fake consumed records (fake.c) for the stage harness (harness.c): record
 * elements made without a broker, which rill_record() accepts.
 */
#ifndef RILL_KAFKA_FAKE_H
#define RILL_KAFKA_FAKE_H

#include <librdkafka/rdkafka.h>

#include <rill/testkit.h>

/* A message with r's fields (copied); *out is freed by
 * rill__fake_record_free(). RILL_EINVAL for a bad record, RILL_EKAFKA when
 * this librdkafka cannot be imitated, RILL_ENOMEM; errstr says why. */
rill_err_t rill__fake_record_new(const rill_testkit_record_t *r, rd_kafka_message_t **out,
                                 char *errstr, size_t errstr_size);
/* The destructor of a fake record element (rill_record() accepts it). */
void rill__fake_record_free(void *payload);

#endif /* RILL_KAFKA_FAKE_H */
