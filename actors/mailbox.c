/*
 * The out-of-line part of the bounded mailbox (mailbox.h): allocating and
 * freeing its ring; pushing and popping are inline in the header.
 */
#include <stdlib.h>

#include "mailbox.h"

int rill__mailbox_init(rill__mailbox_t *mb, uint32_t capacity)
{
    mb->slots = aligned_alloc(64, (size_t)capacity * sizeof(rill__mslot_t));
    if (!mb->slots)
        return -1;
    for (uint32_t i = 0; i < capacity; i++)
        atomic_init(&mb->slots[i].seq, 0); /* never position + 1 before written */
    atomic_init(&mb->tail, 0);
    atomic_init(&mb->head_cache, 0);
    atomic_init(&mb->head, 0);
    mb->mask = capacity - 1;
    return 0;
}

void rill__mailbox_free(rill__mailbox_t *mb)
{
    free(mb->slots);
    mb->slots = NULL;
}
