export { freePort } from "@holdfast/dev-stack";
