package leadflow.twin;

import java.util.Map;

import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.rocksdb.BlockBasedTableConfig;
import org.rocksdb.Cache;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.WriteBufferManager;

/**
 * Bounded off-heap memory for every RocksDB store of the instance (the recipe of the Kafka
 * Streams memory-management docs): one block cache shared by all stores, with the memtables
 * charged to it, instead of Kafka Streams' default of a 50 MiB cache and 3 × 16 MiB memtables
 * per store (per segment of a window store). The sizes follow leadflow's defaults: a 64 MiB
 * block cache (state.block_cache) plus 64 MiB of write buffers.
 */
public final class BoundedRocksDb implements RocksDBConfigSetter {
    static final long TOTAL_BYTES = 128L << 20;
    static final long MEMTABLE_BYTES = 64L << 20;

    private static final Cache CACHE = new LRUCache(TOTAL_BYTES, -1, false, 0.1);
    private static final WriteBufferManager WRITE_BUFFERS = new WriteBufferManager(MEMTABLE_BYTES, CACHE);

    @Override
    public void setConfig(String storeName, Options options, Map<String, Object> configs) {
        BlockBasedTableConfig table = (BlockBasedTableConfig) options.tableFormatConfig();
        table.setBlockCache(CACHE);
        table.setCacheIndexAndFilterBlocks(true);
        table.setCacheIndexAndFilterBlocksWithHighPriority(true);
        table.setPinTopLevelIndexAndFilter(true);
        options.setWriteBufferManager(WRITE_BUFFERS);
        options.setTableFormatConfig(table);
    }

    @Override
    public void close(String storeName, Options options) {
        // The cache and the write buffer manager are shared by every store: never closed here.
    }
}
