// bench/peers/go_queue: the Go side of weft's queue_throughput workload
// (bench/workloads.c): `pairs` producer/consumer pairs of goroutines, each
// producer sending 1..items over its own buffered channel of capacity
// `maxsize`, its consumer receiving and checking the order. Same JSON line
// as ../../shared/peers/go (BENCHMARKS.md). Build: go build -o peer-go-queue .
//
//	peer-go-queue queue_throughput pairs=1 maxsize=1 items=1000000 workers=2
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "ERROR: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "queue_throughput" {
		fail("usage: peer-go-queue queue_throughput [pairs=1] [maxsize=1] [items=1000000] [workers=N]")
	}
	p := map[string]int{"pairs": 1, "maxsize": 1, "items": 1000000, "workers": runtime.NumCPU()}
	for _, a := range os.Args[2:] {
		kv := strings.SplitN(a, "=", 2)
		if len(kv) != 2 {
			fail("bad argument %q (want key=value)", a)
		}
		if _, ok := p[kv[0]]; !ok {
			fail("unknown parameter %q", kv[0])
		}
		v, err := strconv.Atoi(kv[1])
		if err != nil || v < 1 {
			fail("bad value %q", a)
		}
		p[kv[0]] = v
	}
	pairs, maxsize, items, workers := p["pairs"], p["maxsize"], p["items"], p["workers"]
	runtime.GOMAXPROCS(workers)
	var got, bad int64
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(2 * pairs)
	for i := 0; i < pairs; i++ {
		ch := make(chan int, maxsize)
		go func() { // producer
			defer wg.Done()
			for k := 1; k <= items; k++ {
				ch <- k
			}
		}()
		go func() { // consumer
			defer wg.Done()
			var b int64
			for k := 1; k <= items; k++ {
				if <-ch != k {
					b++
				}
			}
			atomic.AddInt64(&got, int64(items))
			atomic.AddInt64(&bad, b)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if bad != 0 || got != int64(pairs)*int64(items) {
		fail("queue_throughput: %d items got (want %d), %d out of order", got, pairs*items, bad)
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("{\"workload\":\"queue_throughput\",\"system\":\"go\",\"workers\":%d,\"value\":%.6g,\"unit\":\"items/s\",\"wall_s\":%.6f,\"rss_kb\":%d,\"params\":\"pairs=%d maxsize=%d items=%d\"}\n",
		workers, float64(got)/wall.Seconds(), wall.Seconds(), ru.Maxrss, pairs, maxsize, items)
}
