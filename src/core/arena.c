/* arena.c — chunked bump allocator (see include/lpvit/arena.h). */
#include "lpvit/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64

struct lpv_arena_chunk {
    lpv_arena_chunk *prev;
    size_t size, used; /* bytes usable after the header, bytes handed out */
    char *data;
};

void lpv_arena_init(lpv_arena *a, size_t chunk_size) {
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : ((size_t)1 << 20);
    a->total = 0;
}

static lpv_arena_chunk *chunk_new(size_t size) {
    lpv_arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, size) != 0) {
        free(c);
        return NULL;
    }
    memset(p, 0, size);
    c->data = p;
    c->size = size;
    c->used = 0;
    c->prev = NULL;
    return c;
}

void *lpv_arena_alloc(lpv_arena *a, size_t bytes) {
    if (bytes > SIZE_MAX - ARENA_ALIGN) return NULL;
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    lpv_arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = need > a->chunk_size ? need : a->chunk_size;
        lpv_arena_chunk *n = chunk_new(size);
        if (!n) return NULL;
        n->prev = c;
        a->head = n;
        a->total += size;
        c = n;
    }
    void *p = c->data + c->used;
    c->used += need;
    return p;
}

char *lpv_arena_strdup(lpv_arena *a, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = lpv_arena_alloc(a, n);
    if (d) memcpy(d, s, n);
    return d;
}

void lpv_arena_free(lpv_arena *a) {
    lpv_arena_chunk *c = a->head;
    while (c) {
        lpv_arena_chunk *prev = c->prev;
        free(c->data);
        free(c);
        c = prev;
    }
    a->head = NULL;
    a->total = 0;
}
