/*
 * The encoding of the stores' keys and values (state_int.h): the
 * namespace prefix of a partition, and int64 values as 8 big-endian bytes.
 * Shared by the stores' front, the changelog and the stage kinds.
 */
#include <string.h>

#include "state_int.h"

size_t rill__state_prefix(uint8_t *buf, int ns, const char *topic, int32_t partition)
{
    if (!buf || !topic || partition < 0)
        return 0;
    size_t tl = strnlen(topic, RILL__TOPIC_MAX + 1);
    if (tl == 0 || tl > RILL__TOPIC_MAX)
        return 0;
    size_t n = 0;
    buf[n++] = (uint8_t)ns;
    memcpy(buf + n, topic, tl);
    n += tl;
    buf[n++] = 0x00;
    uint32_t p = (uint32_t)partition;
    buf[n++] = (uint8_t)(p >> 24);
    buf[n++] = (uint8_t)(p >> 16);
    buf[n++] = (uint8_t)(p >> 8);
    buf[n++] = (uint8_t)p;
    return n;
}

void rill__state_encode_i64(uint8_t out[8], int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)u;
        u >>= 8;
    }
}

int64_t rill__state_decode_i64(const uint8_t in[8])
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | in[i];
    return (int64_t)u;
}
