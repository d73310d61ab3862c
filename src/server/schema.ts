import { buildSchema, getMetadataStorage } from "type-graphql";
import { lexicographicSortSchema, printSchema, type GraphQLSchema } from "graphql";
import { DateTimeResolver } from "graphql-scalars";
import { resolvers } from "../resolvers/index.js";
import { authChecker } from "./auth.js";

/** Builds the executable schema from the resolver classes. */
export async function buildAppSchema(): Promise<GraphQLSchema> {
  return buildSchema({
    resolvers,
    authChecker,
    // Input validation lives in services (one place, with field names in the message).
    validate: false,
    scalarsMap: [{ type: Date, scalar: DateTimeResolver }],
    // Every subscription supplies its own `subscribe` over the EventBus (replay, then live), so
    // type-graphql's topic-based PubSub is never used; this guard makes any accidental use loud.
    pubSub: {
      publish() {
        throw new Error("type-graphql PubSub is not used: publish through the EventBus");
      },
      subscribe() {
        throw new Error("type-graphql PubSub is not used: give @Subscription a `subscribe` function");
      },
    },
  });
}

/** The schema as committed in schema/schema.graphql (sorted, so the file diff is stable). */
export function printAppSchema(schema: GraphQLSchema): string {
  return printSchema(lexicographicSortSchema(schema)) + "\n";
}

/**
 * The declared role requirement of every root field (`Query.x`, `Mutation.y`, `Subscription.z`),
 * as @Authorized declares it; fields without one map to null. The authorization test walks this.
 */
export function rootFieldRoles(): Record<string, string[] | null> {
  const storage = getMetadataStorage();
  const map: Record<string, string[] | null> = {};
  const add = (type: string, list: { schemaName: string; target: Function; methodName: string }[]) => {
    for (const field of list) {
      const authorized = storage.authorizedFields.find((a) => a.target === field.target && a.fieldName === field.methodName);
      map[`${type}.${field.schemaName}`] = authorized ? (authorized.roles as string[]) : null;
    }
  };
  add("Query", storage.queries);
  add("Mutation", storage.mutations);
  add("Subscription", storage.subscriptions);
  return map;
}
