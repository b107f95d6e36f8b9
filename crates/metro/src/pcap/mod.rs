//! Capture files: a streaming pcap/pcapng reader (gzip detected by content) and a pcap writer.
