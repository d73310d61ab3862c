import { Tracking1764150000001 } from "./0001-tracking.migration.js";

/** Ordered PostgreSQL migrations; features append theirs (timestamps keep the order). */
export const migrations = [Tracking1764150000001];
