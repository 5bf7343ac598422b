module goqueue

go 1.19
