/* core/link.h: the intrusive singly-linked node that queues of tasks use. */
#ifndef WEFT_CORE_LINK_H
#define WEFT_CORE_LINK_H

typedef struct weft__link {
  struct weft__link *next;
} weft__link;

#endif
